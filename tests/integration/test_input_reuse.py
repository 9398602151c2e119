"""Inputs kept by content: a file the grid already holds is not uploaded again, per tenant, and a
damaged stored copy is forgotten so the next submission uploads it anew. On the real local grid
(SeaweedFS, Ray workers, API, orchestrator)."""
from __future__ import annotations

import hashlib
import os
import secrets
from unittest import mock

import httpx
import pytest
from sqlalchemy import select

pytestmark = pytest.mark.grid


def spec(name: str, data: bytes) -> dict:
    return {"name": name, "kind": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest()}


def unique_script() -> bytes:
    """A script no earlier test sent, so nothing of it is held yet."""
    return f"import sys\nprint('token-{secrets.token_hex(8)}', open(sys.argv[1]).read() if sys.argv[1:] else '')\n".encode()


def store_for(grid):
    from rgrid_service.localgrid.grid import service_env_for
    from rgrid_service.settings import ServiceSettings
    from rgrid_service.storage import ObjectStore

    with mock.patch.dict(os.environ, service_env_for(grid.state)):
        return ObjectStore(ServiceSettings())


def logs_of(api: httpx.Client, ex_id: str) -> bytes:
    import base64

    page = api.get(f"/v1/executions/{ex_id}/logs").json()
    return b"".join(base64.b64decode(c["data_b64"]) for c in page["chunks"])


def test_a_file_already_uploaded_is_not_uploaded_again_and_queues_in_one_call(grid):
    script = unique_script()
    with grid.api() as api:
        first = api.post("/v1/executions", json={"script": "job.py", "inputs": [spec("job.py", script)],
                                                 "submit": True}).json()
        # New content: it must be uploaded, so nothing is queued yet.
        assert first["status"] == "uploading" and first["reused"] == []
        assert [u["name"] for u in first["uploads"]] == ["job.py"]
        assert httpx.put(first["uploads"][0]["url"], content=script).status_code == 200
        assert api.post(f"/v1/executions/{first['id']}/submit").json()["status"] == "queued"

        # The same content again: no upload, queued by the create call itself.
        second = api.post("/v1/executions", json={"script": "job.py", "inputs": [spec("job.py", script)],
                                                  "submit": True}).json()
        assert second["status"] == "queued" and second["uploads"] == [] and second["reused"] == ["job.py"]

        # Same script with a new data file: only the data file is asked for.
        data = f"data-{secrets.token_hex(4)}".encode()
        third = api.post("/v1/executions", json={"script": "job.py", "args": ["d.txt"], "submit": True,
                                                 "inputs": [spec("job.py", script), spec("d.txt", data)]}).json()
        assert third["status"] == "uploading" and third["reused"] == ["job.py"]
        assert [u["name"] for u in third["uploads"]] == ["d.txt"]
        assert httpx.put(third["uploads"][0]["url"], content=data).status_code == 200
        assert api.post(f"/v1/executions/{third['id']}/submit").status_code == 200

        done = grid.wait_all([first["id"], second["id"], third["id"]])
        assert {ex["status"] for ex in done.values()} == {"succeeded"}
        token = script.split(b"'")[1]
        assert token in logs_of(api, first["id"]) and token in logs_of(api, second["id"])
        assert data in logs_of(api, third["id"])


def test_without_submit_flag_a_held_file_still_waits_for_submit(grid):
    """Old clients (create, PUT what is listed, submit) keep working when nothing is listed."""
    script = unique_script()
    first = grid.submit(script.decode())
    with grid.api() as api:
        again = api.post("/v1/executions", json={"script": "job.py", "inputs": [spec("job.py", script)]}).json()
        assert again["status"] == "uploading" and again["uploads"] == []
        assert api.post(f"/v1/executions/{again['id']}/submit").json()["status"] == "queued"
    done = grid.wait_all([first, again["id"]])
    assert {ex["status"] for ex in done.values()} == {"succeeded"}


def test_reuse_is_per_tenant(grid):
    from rgrid_service import auth
    from rgrid_service.storage import blob_key

    script = unique_script()
    grid.wait_all([grid.submit(script.decode())])  # held for our tenant now
    other_key = auth.create_key(grid.engine(), f"reuse-other-{secrets.token_hex(3)}")
    with grid.api(other_key) as other:
        created = other.post("/v1/executions", json={"script": "job.py", "inputs": [spec("job.py", script)],
                                                     "submit": True}).json()
    # The other tenant cannot tell that we hold this file: it is asked to upload it, to its own key.
    assert created["status"] == "uploading" and created["reused"] == []
    assert [u["name"] for u in created["uploads"]] == ["job.py"]
    own_tenant = _tenant_of(grid)
    assert blob_key(own_tenant, spec("job.py", script)["sha256"]) not in created["uploads"][0]["url"]


def _tenant_of(grid) -> str:
    from rgrid_service.auth import tenant_for_key

    return tenant_for_key(grid.engine(), grid.state.api_key)


def test_a_damaged_stored_input_fails_with_a_sentence_and_is_uploaded_again_next_time(grid):
    from rgrid_service import lifecycle
    from rgrid_service.db.models import Blob
    from rgrid_service.db.session import write_tx
    from rgrid_service.storage import blob_key

    script = unique_script()
    s = spec("job.py", script)
    tenant = _tenant_of(grid)
    with grid.api() as api:
        # Put damaged bytes (same size) where the file is kept, and record it as verified, as if
        # the object had been damaged in the store after a good upload. No worker has it cached:
        # this content never ran.
        import io

        damaged = bytes(b ^ 1 for b in script)
        store_for(grid).put_stream(blob_key(tenant, s["sha256"]), io.BytesIO(damaged), len(damaged))
        assert store_for(grid).stat(blob_key(tenant, s["sha256"])).size == len(script)
        with write_tx(grid.engine()) as conn:
            lifecycle.remember_blobs(conn, tenant, [{**s, "object_key": blob_key(tenant, s["sha256"])}])

        reused = api.post("/v1/executions", json={"script": "job.py", "inputs": [s], "submit": True}).json()
        assert reused["status"] == "queued" and reused["reused"] == ["job.py"]
        ex = grid.wait_all([reused["id"]])[reused["id"]]
        assert ex["status"] == "failed"
        assert "stored copy is damaged" in ex["reason"] and "run it again" in ex["reason"]
        with grid.engine().connect() as conn:
            assert conn.execute(select(Blob).where(Blob.tenant_id == tenant, Blob.sha256 == s["sha256"])).first() is None

        # Running it again asks for the upload, and then it works.
        fresh = api.post("/v1/executions", json={"script": "job.py", "inputs": [s], "submit": True}).json()
        assert fresh["status"] == "uploading" and [u["name"] for u in fresh["uploads"]] == ["job.py"]
        assert httpx.put(fresh["uploads"][0]["url"], content=script).status_code == 200
        assert api.post(f"/v1/executions/{fresh['id']}/submit").status_code == 200
        assert grid.wait_all([fresh["id"]])[fresh["id"]]["status"] == "succeeded"


def test_cli_runs_of_the_same_files_upload_them_once(grid, tmp_path):
    """`rgrid run` twice with the same script and data: the second run sends nothing to the store."""
    script = tmp_path / "count.py"
    script.write_text(f"import sys\n# {secrets.token_hex(8)}\nprint(len(open(sys.argv[1], 'rb').read()))\n")
    (tmp_path / "data.bin").write_bytes(os.urandom(300_000))
    store = store_for(grid)

    def held() -> set[str]:
        return {o.object_name for o in store.client.list_objects(store.bucket, prefix="blobs/", recursive=True)}

    before = held()
    r = grid.rgrid("run", "count.py", "data.bin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "300000"
    after_first = held()
    assert len(after_first - before) == 2  # the script and the data file, kept by content

    r = grid.rgrid("run", "count.py", "data.bin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "300000"
    assert held() == after_first
    # A changed data file is uploaded; the unchanged script is not.
    (tmp_path / "data.bin").write_bytes(os.urandom(1000))
    r = grid.rgrid("run", "count.py", "data.bin", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode().strip() == "1000", r.stderr.decode()
    assert len(held() - after_first) == 1

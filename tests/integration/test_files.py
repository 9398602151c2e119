"""Files on the real local grid (SeaweedFS, Ray workers, API, orchestrator): an input over the
multipart threshold (8 MiB in tests) goes up in parts through the real CLI and runs; a presigned
PUT used again after submit cannot change a kept input; retention deletes an ended run's files
and a kept input from the store, and `rgrid download` then says so."""
from __future__ import annotations

import hashlib
import os
import secrets
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tests.integration.test_input_reuse import logs_of, spec, store_for, unique_script

pytestmark = pytest.mark.grid
MIB = 1024 * 1024


def _tenant(grid) -> str:
    from rgrid_service.auth import tenant_for_key

    return tenant_for_key(grid.engine(), grid.state.api_key)


def _inputs(grid, ex_id: str) -> list[dict]:
    from rgrid_service.db.models import Execution

    with grid.engine().connect() as conn:
        return conn.execute(select(Execution.inputs).where(Execution.id == ex_id)).scalar_one()


def test_an_input_over_the_multipart_threshold_goes_up_in_parts_and_runs(grid, tmp_path):
    from rgrid_service.storage import blob_key

    data = os.urandom(13 * MIB + 12345)  # three parts: 5 + 5 + 3 MiB and a bit
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "job.py").write_text(
        "import hashlib, sys\nb = open(sys.argv[1], 'rb').read()\n"
        f"print('token-{secrets.token_hex(4)}', len(b), hashlib.sha256(b).hexdigest())\n")
    r = grid.rgrid("run", "job.py", "data.bin", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    sha = hashlib.sha256(data).hexdigest()
    assert f"{len(data)} {sha}" in r.stdout.decode()

    with grid.api() as api:
        ex_id = api.get("/v1/executions", params={"limit": 1}).json()[0]["id"]
    kept = next(i for i in _inputs(grid, ex_id) if i["name"] == "data.bin")
    assert kept["object_key"] == blob_key(_tenant(grid), sha) and "upload_id" not in kept
    store = store_for(grid)
    stat = store.stat(kept["object_key"])
    assert stat.size == len(data)
    assert store.stat(f"uploads/{ex_id}/data.bin") is None  # the staging copy is gone

    # The same file again is held by content: nothing is uploaded.
    again = grid.rgrid("run", "job.py", "data.bin", cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and f"{len(data)} {sha}" in again.stdout.decode()


def test_a_multipart_upload_missing_a_part_is_not_queued(grid):
    data = os.urandom(11 * MIB)
    s = spec("d.bin", data)
    script = unique_script()
    with grid.api() as api:
        created = api.post("/v1/executions", json={"script": "job.py", "inputs": [spec("job.py", script), s]}).json()
        by_name = {u["name"]: u for u in created["uploads"]}
        assert httpx.put(by_name["job.py"]["url"], content=script).status_code == 200
        multipart = by_name["d.bin"]
        assert multipart["url"] is None and len(multipart["part_urls"]) == 3 and multipart["part_bytes"] == 5 * MIB
        for n, url in enumerate(multipart["part_urls"][:2]):
            assert httpx.put(url, content=data[n * 5 * MIB:(n + 1) * 5 * MIB]).status_code == 200
        r = api.post(f"/v1/executions/{created['id']}/submit")
        assert r.status_code == 409 and "d.bin lacks 1 of its 3 parts" in r.json()["detail"]
        assert httpx.put(multipart["part_urls"][2], content=data[10 * MIB:]).status_code == 200
        r = api.post(f"/v1/executions/{created['id']}/submit")
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    assert grid.wait_all([created["id"]])[created["id"]]["status"] == "succeeded"


def test_a_presigned_put_used_again_after_submit_changes_nothing(grid):
    from rgrid_service.storage import blob_key

    script = unique_script()
    s = spec("job.py", script)
    evil = script.replace(b"token-", b"EVIL!-")
    with grid.api() as api:
        created = api.post("/v1/executions", json={"script": "job.py", "inputs": [s]}).json()
        url = created["uploads"][0]["url"]
        assert httpx.put(url, content=script).status_code == 200
        assert api.post(f"/v1/executions/{created['id']}/submit").json()["status"] == "queued"
        # The URL still signs: a PUT lands, but only on the staging key nobody reads any more.
        assert httpx.put(url, content=evil).status_code == 200
        store = store_for(grid)
        key = blob_key(_tenant(grid), s["sha256"])
        held = store.stat(key)
        assert held.size == len(script) and held.etag.strip('"') == s["md5"]
        assert _inputs(grid, created["id"])[0]["object_key"] == key
        assert grid.wait_all([created["id"]])[created["id"]]["status"] == "succeeded"
        assert b"token-" in logs_of(api, created["id"]) and b"EVIL" not in logs_of(api, created["id"])
        # Run again with the same content: reused, and still the original bytes.
        again = api.post("/v1/executions", json={"script": "job.py", "inputs": [s], "submit": True}).json()
        assert again["reused"] == ["job.py"]
        assert grid.wait_all([again["id"]])[again["id"]]["status"] == "succeeded"
        assert b"EVIL" not in logs_of(api, again["id"])


def test_retention_deletes_the_files_and_download_says_so(grid, tmp_path):
    from rgrid_service.db.clock import utcago
    from rgrid_service.db.models import Blob, Execution
    from rgrid_service.db.session import write_tx
    from rgrid_service.orchestrator.retention import expire_blobs, expire_runs
    from rgrid_service.storage import blob_key

    script = unique_script() + b"open('out.txt', 'w').write('kept for a while')\n"
    ex_id = grid.submit(script.decode())
    assert grid.wait_all([ex_id])[ex_id]["status"] == "succeeded"
    store = store_for(grid)
    with grid.api() as api:
        [output] = api.get(f"/v1/executions/{ex_id}/outputs").json()
    assert output["path"] == "out.txt"
    key = blob_key(_tenant(grid), hashlib.sha256(script).hexdigest())
    assert store.stat(key) is not None

    # Ended ten days ago and its script not used since: past the default 7 days. Runs of other
    # tests ended minutes ago, so the passes below touch only this one.
    engine = grid.engine()
    with write_tx(engine) as conn:
        conn.execute(update(Execution).where(Execution.id == ex_id).values(finished_at=utcago(10 * 86400)))
        conn.execute(update(Blob).where(Blob.object_key == key)
                     .values(created_at=utcago(10 * 86400), last_used_at=utcago(10 * 86400)))
    assert expire_runs(engine, store, timedelta(days=7), 500) == [ex_id]
    assert expire_blobs(engine, store, timedelta(days=7), 500) == [key]
    assert list(store.client.list_objects(store.bucket, prefix=f"executions/{ex_id}/", recursive=True)) == []
    assert store.stat(key) is None

    r = grid.rgrid("download", ex_id, cwd=tmp_path)
    assert r.returncode != 0
    said = " ".join((r.stderr.decode() + r.stdout.decode()).split())
    assert f"The files of {ex_id} were deleted on " in said and "after 7 days of retention; run it again" in said

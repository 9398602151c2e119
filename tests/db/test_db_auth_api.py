"""API keys and the HTTP API's tenant isolation, input validation and database-away answer."""
from __future__ import annotations

import socket
from datetime import datetime

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rgrid_service import auth
from rgrid_service.api.app import create_app
from rgrid_service.db.models import ApiKey, Execution
from rgrid_service.db.session import engine_for
from rgrid_service.settings import ServiceSettings
from rgrid_service.storage import blob_key



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

SHA = "0" * 64
MD5 = "f" * 32


def is_sentence(detail) -> bool:
    return isinstance(detail, str) and len(detail) > 15 and " " in detail and "Traceback" not in detail


def body(**overrides) -> dict:
    b = dict(script="s.py", inputs=[dict(name="s.py", kind="file", size=1, sha256=SHA, md5=MD5)])
    b.update(overrides)
    return b


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- API keys ---------------------------------------------------------------------------------


def test_keys_map_to_their_tenant_and_are_stored_hashed(engine):
    key_a = auth.create_key(engine, "tenant-a", "Tenant A")
    key_a2 = auth.create_key(engine, "tenant-a")  # a second key for an existing tenant
    key_b = auth.create_key(engine, "tenant-b")
    assert len({key_a, key_a2, key_b}) == 3
    assert auth.tenant_for_key(engine, key_a) == "tenant-a"
    assert auth.tenant_for_key(engine, key_a2) == "tenant-a"
    assert auth.tenant_for_key(engine, key_b) == "tenant-b"
    assert auth.tenant_for_key(engine, key_a + "x") is None
    assert auth.tenant_for_key(engine, "rg_not-a-key") is None
    assert auth.tenant_for_key(engine, "") is None

    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(select(ApiKey.__table__)).all()]
    assert len(stored) == 3
    flat = " ".join(str(v) for r in stored for v in r)
    for key in (key_a, key_a2, key_b):
        assert key not in flat
        assert key[3:] not in flat
        assert auth.hash_key(key) in flat

    # A revoked key stops working; the tenant's other key does not.
    with engine.begin() as conn:
        conn.execute(
            update(ApiKey).where(ApiKey.key_hash == auth.hash_key(key_a)).values(revoked_at=datetime(2020, 1, 1))
        )
    assert auth.tenant_for_key(engine, key_a) is None
    assert auth.tenant_for_key(engine, key_a2) == "tenant-a"


# --- HTTP API ---------------------------------------------------------------------------------


def test_tenants_cannot_see_each_others_executions(api, engine):
    key_a = auth.create_key(engine, "tenant-a")
    key_b = auth.create_key(engine, "tenant-b")

    r = api.post("/v1/executions", json=body(env={"SECRET": "hunter2"}), headers=bearer(key_a))
    assert r.status_code == 201, r.text
    created = r.json()
    execution_id = created["id"]
    assert created["status"] == "uploading"
    assert [u["name"] for u in created["uploads"]] == ["s.py"]
    # Uploaded to a key of its own execution, never to where verified inputs are kept (api.uploads).
    assert f"uploads/{execution_id}/s.py" in created["uploads"][0]["url"]
    assert blob_key("tenant-a", body()["inputs"][0]["sha256"]) not in created["uploads"][0]["url"]

    # The owner sees it (and never the secret value).
    r = api.get(f"/v1/executions/{execution_id}", headers=bearer(key_a))
    assert r.status_code == 200, r.text
    assert r.json()["env_keys"] == ["SECRET"] and "hunter2" not in r.text
    assert [e["id"] for e in api.get("/v1/executions", headers=bearer(key_a)).json()] == [execution_id]
    assert api.get(f"/v1/executions/{execution_id}/logs", headers=bearer(key_a)).status_code == 200
    assert api.get(f"/v1/executions/{execution_id}/outputs", headers=bearer(key_a)).json() == []

    # The other tenant sees nothing, cannot cancel, and cannot tell it exists.
    for method, path in [
        ("GET", f"/v1/executions/{execution_id}"),
        ("GET", f"/v1/executions/{execution_id}/logs"),
        ("GET", f"/v1/executions/{execution_id}/outputs"),
        ("POST", f"/v1/executions/{execution_id}/cancel"),
        ("POST", f"/v1/executions/{execution_id}/submit"),
    ]:
        r = api.request(method, path, headers=bearer(key_b))
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert is_sentence(r.json()["detail"])
        missing = api.request(method, path.replace(execution_id, "ex-000000000000"), headers=bearer(key_b))
        assert missing.status_code == 404
    assert api.get("/v1/executions", headers=bearer(key_b)).json() == []
    with engine.connect() as conn:
        assert conn.execute(select(Execution.status).where(Execution.id == execution_id)).scalar_one() == "uploading"

    # The owner can cancel it.
    r = api.post(f"/v1/executions/{execution_id}/cancel", headers=bearer(key_a))
    assert r.status_code == 200 and r.json()["status"] == "canceled"


def test_requests_without_a_valid_key_get_401(api, engine):
    key_a = auth.create_key(engine, "tenant-a")
    for method, path in [("GET", "/v1/executions"), ("POST", "/v1/executions"), ("GET", "/v1/executions/ex-1")]:
        kwargs = {"json": body()} if method == "POST" else {}
        r = api.request(method, path, **kwargs)
        assert r.status_code == 401, (path, r.text)
        assert is_sentence(r.json()["detail"])
        r = api.request(method, path, headers=bearer("rg_wrong"), **kwargs)
        assert r.status_code == 401, (path, r.text)
        assert is_sentence(r.json()["detail"])
        r = api.request(method, path, headers=bearer(key_a + "x"), **kwargs)
        assert r.status_code == 401
    with engine.connect() as conn:
        assert conn.execute(select(Execution.id)).all() == []
    assert api.get("/v1/health").json() == {"status": "ok"}


BAD_NAMES = ["../x", "a/b", "/etc/passwd", "a\x00b", "..", ".", "x" * 300, "a\\b", "", "a\nb"]


def test_malicious_input_names_are_rejected(api, engine):
    key = auth.create_key(engine, "tenant-a")
    for name in BAD_NAMES:
        b = body(script=name, inputs=[dict(name=name, kind="file", size=1, sha256=SHA, md5=MD5)])
        r = api.post("/v1/executions", json=b, headers=bearer(key))
        assert r.status_code == 400, (name, r.text)
        assert is_sentence(r.json()["detail"]), (name, r.text)
        # Also when the bad name is an extra input next to a good script.
        b = body(inputs=[dict(name="s.py", kind="file", size=1, sha256=SHA, md5=MD5),
                         dict(name=name, kind="file", size=1, sha256=SHA, md5=MD5)])
        r = api.post("/v1/executions", json=b, headers=bearer(key))
        assert r.status_code == 400, (name, r.text)
    with engine.connect() as conn:
        assert conn.execute(select(Execution.id)).all() == []


def test_invalid_execution_requests_are_rejected(api, engine):
    key = auth.create_key(engine, "tenant-a")

    r = api.post("/v1/executions", json=body(script="other.py"), headers=bearer(key))
    assert r.status_code == 400 and is_sentence(r.json()["detail"]), r.text

    r = api.post("/v1/executions", json=body(runtime="python:2.7"), headers=bearer(key))
    assert r.status_code == 400, r.text
    assert "python:3.11" in r.json()["detail"] and is_sentence(r.json()["detail"])

    for bad_key in ["1BAD", "A-B", "", "A B", "ÄB"]:
        r = api.post("/v1/executions", json=body(env={bad_key: "x"}), headers=bearer(key))
        assert r.status_code == 400, (bad_key, r.text)
        assert is_sentence(r.json()["detail"])

    dup = dict(name="s.py", kind="file", size=1, sha256=SHA, md5=MD5)
    r = api.post("/v1/executions", json=body(inputs=[dup, dup]), headers=bearer(key))
    assert r.status_code == 400 and is_sentence(r.json()["detail"]), r.text

    for bad in (body(env={"OK": "a\x00b"}), body(args=["fine", "nul\x00here"])):
        r = api.post("/v1/executions", json=bad, headers=bearer(key))
        assert r.status_code == 400 and "NUL" in r.json()["detail"], r.text

    with engine.connect() as conn:
        assert conn.execute(select(Execution.id)).all() == []
    r = api.post("/v1/executions", json=body(env={"GOOD_1": "x", "_ok": "y"}), headers=bearer(key))
    assert r.status_code == 201, r.text

    # A log cursor beyond any id is a validation error, not a crash or a fake "database away".
    r = api.get(f"/v1/executions/{r.json()['id']}/logs", params={"after": 2**63}, headers=bearer(key))
    assert r.status_code == 422, r.text


def test_database_away_gives_503_with_a_sentence(tmp_path):
    port = free_port()  # nothing listens there
    for url in (
        f"postgresql://postgres@127.0.0.1:{port}/rgrid",
        f"sqlite:///{tmp_path / 'no-such-dir' / 'rgrid.db'}",
    ):
        app = create_app(ServiceSettings(database_url=url, s3_endpoint="127.0.0.1:1"))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                r = client.get("/v1/health")
                assert r.status_code == 503, (url, r.status_code, r.text)
                assert is_sentence(r.json()["detail"])
                r = client.get("/v1/executions", headers=bearer("rg_anything"))
                assert r.status_code == 503, (url, r.status_code, r.text)
                assert is_sentence(r.json()["detail"])
        finally:
            engine_for(url).dispose()


def test_batch_summary_counts_per_status_for_its_tenant_only(api, engine):
    key_a = auth.create_key(engine, "tenant-a")
    key_b = auth.create_key(engine, "tenant-b")
    ids = []
    for _ in range(3):
        r = api.post("/v1/executions", json=body(batch_id="b-one"), headers=bearer(key_a))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    api.post("/v1/executions", json=body(batch_id="b-other"), headers=bearer(key_a))
    view = api.get("/v1/batches/b-one", headers=bearer(key_a)).json()
    assert view == {"batch_id": "b-one", "total": 3, "counts": {"uploading": 3}, "finished": False, "cost_eur": None}

    for ex_id in ids[:2]:
        assert api.post(f"/v1/executions/{ex_id}/cancel", headers=bearer(key_a)).status_code == 200
    view = api.get("/v1/batches/b-one", headers=bearer(key_a)).json()
    assert view["counts"] == {"uploading": 1, "canceled": 2} and not view["finished"]
    api.post(f"/v1/executions/{ids[2]}/cancel", headers=bearer(key_a))
    assert api.get("/v1/batches/b-one", headers=bearer(key_a)).json()["finished"] is True

    # Another tenant cannot tell the batch exists.
    r = api.get("/v1/batches/b-one", headers=bearer(key_b))
    assert r.status_code == 404 and is_sentence(r.json()["detail"])
    assert api.get("/v1/batches/b-one").status_code == 401


def test_bulk_create_makes_all_in_order_or_none(api, engine):
    key = auth.create_key(engine, "tenant-a")
    many = [body(args=[str(n)], batch_id="b-bulk") for n in range(5)]
    r = api.post("/v1/executions/bulk", json={"executions": many}, headers=bearer(key))
    assert r.status_code == 201, r.text
    created = r.json()["created"]
    assert len(created) == 5 and len({c["id"] for c in created}) == 5
    for n, c in enumerate(created):
        assert c["status"] == "uploading" and [u["name"] for u in c["uploads"]] == ["s.py"]
        assert api.get(f"/v1/executions/{c['id']}", headers=bearer(key)).json()["args"] == [str(n)]

    # One bad execution: a sentence naming it, and nothing created.
    before = len(api.get("/v1/executions", headers=bearer(key)).json())
    bad = many[:2] + [body(script="missing.py")] + many[2:]
    r = api.post("/v1/executions/bulk", json={"executions": bad}, headers=bearer(key))
    assert r.status_code == 400 and r.json()["detail"].startswith("Execution 3 of 6:")
    assert "Nothing was created" in r.json()["detail"]
    assert len(api.get("/v1/executions", headers=bearer(key)).json()) == before
    assert api.post("/v1/executions/bulk", json={"executions": []}, headers=bearer(key)).status_code == 422
    assert api.post("/v1/executions/bulk", json={"executions": many}).status_code == 401

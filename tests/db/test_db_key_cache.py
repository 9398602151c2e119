"""The API's verified-key cache through HTTP, on both databases: a revoked or rescoped key is
honoured at most api_key_cache_seconds late (on a clock the test moves), and never with the cache
off; and the follower reads' JSON, made by the route itself, is the JSON FastAPI would send."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from rgrid_service import auth
from rgrid_service.api import schemas
from rgrid_service.api.app import create_app
from rgrid_service.db.models import ApiKey, LogChunk
from rgrid_service.db.session import engine_for
from rgrid_service.settings import ServiceSettings
from tests.db.conftest import SECRET_KEY


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


@contextmanager
def api_with(db_url: str, clock: Clock, **settings):
    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", secret_key=SECRET_KEY, **settings))
    app.state.verified_keys.clock = clock
    try:
        with TestClient(app) as client:
            yield client
    finally:
        engine_for(db_url).dispose()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def revoke(engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(ApiKey).where(ApiKey.key_hash == auth.hash_key(key)).values(revoked_at=datetime(2026, 1, 1)))


def test_a_revoked_key_works_at_most_the_cache_ttl_longer(db_url, engine, make_execution):
    ex = make_execution(tenant_id="tenant-a")
    key, other = auth.create_key(engine, "tenant-a"), auth.create_key(engine, "tenant-a")
    clock = Clock()
    with api_with(db_url, clock, api_key_cache_seconds=5.0) as api:
        assert api.get(f"/v1/executions/{ex}", headers=bearer(key)).status_code == 200
        assert api.get(f"/v1/executions/{ex}", headers=bearer(other)).status_code == 200
        revoke(engine, key)
        clock.t += 4.9
        assert api.get(f"/v1/executions/{ex}", headers=bearer(key)).status_code == 200  # within the TTL
        clock.t += 0.1
        r = api.get(f"/v1/executions/{ex}/logs", headers=bearer(key))
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        assert api.get(f"/v1/executions/{ex}", headers=bearer(key)).status_code == 401  # and stays refused
        assert api.get(f"/v1/executions/{ex}", headers=bearer(other)).status_code == 200  # verified afresh


def test_without_the_cache_a_revoked_key_is_refused_at_once(db_url, engine, make_execution):
    ex = make_execution(tenant_id="tenant-a")
    key = auth.create_key(engine, "tenant-a")
    with api_with(db_url, Clock(), api_key_cache_seconds=0) as api:
        assert api.get(f"/v1/executions/{ex}", headers=bearer(key)).status_code == 200
        revoke(engine, key)
        assert api.get(f"/v1/executions/{ex}", headers=bearer(key)).status_code == 401


def test_a_new_scope_is_honoured_once_the_ttl_is_over(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    clock = Clock()
    with api_with(db_url, clock, api_key_cache_seconds=5.0) as api:
        assert api.get("/v1/workers", headers=bearer(key)).status_code == 403
        assert auth.set_scope(engine, key, auth.OPERATOR_SCOPE)
        clock.t += 5.0
        assert api.get("/v1/workers", headers=bearer(key)).status_code == 200


def test_invalid_keys_are_looked_up_every_time(db_url, engine):
    """Only keys found valid are kept: a key made after a refusal works at once."""
    with api_with(db_url, Clock(), api_key_cache_seconds=60.0) as api:
        assert api.get("/v1/executions", headers=bearer("rg_not-yet")).status_code == 401
        key = auth.create_key(engine, "tenant-a")
        assert api.get("/v1/executions", headers=bearer(key)).status_code == 200
        assert len(api.app.state.verified_keys) == 1


def test_the_follower_reads_send_what_fastapi_would(db_url, engine, make_execution):
    ex = make_execution(tenant_id="tenant-a", status="running", env_keys=["TOKEN"], args=["a", "ü"])
    with engine.begin() as conn:
        conn.execute(LogChunk.__table__.insert(), [dict(execution_id=ex, attempt=1, stream="stdout", data=b"hi\xff\n")])
    key = auth.create_key(engine, "tenant-a")
    reference = FastAPI()

    @reference.get("/execution", response_model=schemas.ExecutionView)
    async def as_fastapi_sends_it(): return view

    @reference.get("/logs", response_model=schemas.LogPage)
    async def page_as_fastapi_sends_it(): return page

    with api_with(db_url, Clock()) as api, TestClient(reference) as ref:
        got = api.get(f"/v1/executions/{ex}", headers=bearer(key))
        view = schemas.ExecutionView.model_validate_json(got.content)
        expected = ref.get("/execution")
        assert got.content == expected.content and got.headers["content-type"] == expected.headers["content-type"]
        got = api.get(f"/v1/executions/{ex}/logs", headers=bearer(key))
        page = schemas.LogPage.model_validate_json(got.content)
        assert page.chunks and got.content == ref.get("/logs").content
        assert got.headers["content-type"] == "application/json"

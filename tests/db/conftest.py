"""Fixtures for the database tests: a real SQLite file and a real, throwaway PostgreSQL.

Every test that takes `db_url` (or `engine`) runs twice, once per database. The PostgreSQL cluster
(tests/pgserver.py, the session fixture `pg_server` in tests/conftest.py) is started once per
session and each test gets its own freshly created database, migrated from empty by Alembic.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert

from rgrid_service.api.app import create_app
from rgrid_service.db.models import Execution, Tenant
from rgrid_service.db.session import engine_for, make_engine, upgrade_schema
from rgrid_service.settings import ServiceSettings
from tests.pgserver import PgServer

SECRET_KEY = "test-secret-key-" + "x" * 32  # the control plane's (rgrid_service.secrets)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database per test, migrated to head from empty; yields its URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rgrid.db'}"
        upgrade_schema(url)
        yield url
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = "t_" + uuid.uuid4().hex[:16]
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = server.url(name)
    try:
        upgrade_schema(url)
        yield url
    finally:
        with server.admin() as conn:
            # FORCE: engines cached by create_app (engine_for) may still hold pooled connections.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def api(db_url):
    """A test client of the API on this database (its store is unreachable: nothing here uploads)."""
    from fastapi.testclient import TestClient

    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", secret_key=SECRET_KEY))
    cached = engine_for(db_url)  # the engine create_app took; dispose it so the database can go
    with TestClient(app) as client:
        yield client
    cached.dispose()


@pytest.fixture
def make_execution(engine):
    """Insert a tenant (once) and an execution row directly; returns the execution id."""
    tenants: set[str] = set()

    def make(status: str = "queued", tenant_id: str = "tenant-a", **overrides) -> str:
        execution_id = "ex-" + uuid.uuid4().hex[:12]
        with engine.begin() as conn:
            if tenant_id not in tenants:
                conn.execute(insert(Tenant).values(id=tenant_id, name=tenant_id))
                tenants.add(tenant_id)
            values = dict(
                id=execution_id, tenant_id=tenant_id, status=status, script="s.py", args=[], env={},
                runtime="python:3.11", timeout_seconds=60, inputs=[],
            )
            values.update(overrides)
            conn.execute(insert(Execution).values(**values))
        return execution_id

    return make


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real SeaweedFS S3 gateway on 127.0.0.1 for the session: (endpoint, access key, secret key).
    A heavy process on a shared machine: run the tests that take it (test_db_worker_api.py,
    test_db_worker_attack.py) under /tmp/rgrid-heavy.lock, as grids are."""
    import secrets

    from rgrid_service.localgrid.procs import stop_groups
    from rgrid_service.localgrid.seaweed import start_seaweed

    home = tmp_path_factory.mktemp("seaweed")
    keys = ("rgrid-" + secrets.token_hex(4), secrets.token_urlsafe(24))
    pid, port, _cmd = start_seaweed(home / "s3", keys[0], keys[1], home / "seaweedfs.log")
    try:
        yield f"127.0.0.1:{port}", keys[0], keys[1]
    finally:
        stop_groups([pid], grace=5)

"""The queue's bell on both databases: a ring wakes the orchestrator's listener (NOTIFY on
PostgreSQL, a loopback datagram on SQLite), the API rings when a run is queued or canceled, and the
PostgreSQL listener hears again after its connection was cut."""
from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from rgrid_service import auth
from rgrid_service.api.app import create_app
from rgrid_service.db.session import engine_for
from rgrid_service.localgrid.procs import free_udp_port
from rgrid_service.queuebell import Bell, Listener
from rgrid_service.settings import ServiceSettings
from tests.db.conftest import SECRET_KEY
from tests.db.test_db_auth_api import bearer, body


@pytest.fixture
def listening(engine):
    """(wake event, listener, wake port) with the listener hearing rings."""
    wake = threading.Event()
    port = free_udp_port()
    listener = Listener(wake, engine, "127.0.0.1", port)
    listener.start()
    assert listener.listening.wait(20), "the listener never started hearing the bell"
    wake.clear()  # PostgreSQL's listener wakes once when it starts listening
    yield wake, listener, port
    listener.stop()
    listener.join(5)


def test_a_ring_wakes_the_listener(engine, listening):
    wake, _listener, port = listening
    bell = Bell(engine, "127.0.0.1", port)
    assert not wake.is_set()
    bell.ring()
    assert wake.wait(10)


def test_the_api_rings_when_a_run_is_queued_or_canceled(db_url, engine, listening):
    wake, _listener, port = listening
    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", secret_key=SECRET_KEY,
                                     wake_port=port))
    key = auth.create_key(engine, "tenant-a")
    try:
        with TestClient(app) as api:
            r = api.post("/v1/executions", json=body(), headers=bearer(key))
            assert r.status_code == 201, r.text
            assert wake.wait(10), "creating a run did not ring"
            wake.clear()
            assert not wake.wait(0.5)  # nothing rings on its own
            assert api.get("/v1/executions", headers=bearer(key)).status_code == 200
            assert not wake.wait(0.5)  # a read does not ring
            assert api.post(f"/v1/executions/{r.json()['id']}/cancel", headers=bearer(key)).status_code == 200
            assert wake.wait(10), "canceling a run did not ring"
    finally:
        engine_for(db_url).dispose()


def test_a_ring_to_nobody_fails_nothing(engine):
    Bell(engine, "127.0.0.1", free_udp_port()).ring()  # no listener there
    Bell(engine, "127.0.0.1", None).ring()


@pytest.fixture
def pg_engine(pg_server):
    """An engine on a fresh PostgreSQL database (LISTEN/NOTIFY is PostgreSQL's alone)."""
    import uuid

    from rgrid_service.db.session import make_engine, upgrade_schema

    name = "t_" + uuid.uuid4().hex[:16]
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    upgrade_schema(pg_server.url(name))
    eng = make_engine(pg_server.url(name))
    yield eng
    eng.dispose()
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
def test_the_postgres_listener_hears_again_after_its_connection_is_cut(pg_engine):
    wake = threading.Event()
    listener = Listener(wake, pg_engine, "127.0.0.1", None)
    listener.start()
    try:
        assert listener.listening.wait(20)
        wake.clear()
        with pg_engine.begin() as conn:
            cut = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = 'LISTEN rgrid_queue' AND datname = current_database()").fetchall()
        assert cut == [(True,)]
        # It reconnects and wakes the loop once (whatever changed while it was deaf)...
        assert wake.wait(20), "the listener did not come back"
        wake.clear()
        assert listener.listening.wait(20)
        # ...and hears rings again.
        Bell(pg_engine, "127.0.0.1", None).ring()
        assert wake.wait(10)
    finally:
        listener.stop()
        listener.join(5)

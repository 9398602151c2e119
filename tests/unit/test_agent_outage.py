"""The agent rides out a control plane that cannot answer: a heartbeat answered 502/503, or not at
all, never takes the worker down; only a refusal does (rgrid_runner.agent over real HTTP)."""
from __future__ import annotations

import pytest

from rgrid_core import workerwire as wire
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import WorkerClient
from tests.httpstandin import server  # noqa: F401 - the fixture


def test_heartbeats_answered_503_or_502_do_not_take_the_worker_down(server, monkeypatch):
    from rgrid_runner import agent

    monkeypatch.setenv("RGRID_AGENT_KILLS_GROUP", "0")  # not this test's process group
    server.answer("POST", wire.REGISTER, (200, {"worker_id": "w-1", "heartbeat_interval_seconds": 0.05}))
    away = (503, {"detail": "The database is not reachable right now. Nothing was lost; try again in a few seconds."})
    server.answer("POST", wire.HEARTBEAT, away, away, (502, b"bad gateway"), away,
                  (200, {"worker_id": "w-1", "running": []}),
                  (403, {"detail": "Worker w-1 was declared dead.", "code": wire.GIVEN_UP}))
    client = WorkerClient(server.url, "rgw_test-token", outage_budget=5.0, timeout=5.0)
    try:
        with pytest.raises(SystemExit) as exit_:
            agent.run(2, "local", WorkerSettings(), client)
    finally:
        client.close()
    assert exit_.value.code == 3  # the refusal, and only it, took the worker down
    assert len(server.requests("POST", wire.HEARTBEAT)) == 6


def test_a_refusal_that_does_not_say_given_up_is_a_failed_beat(server, monkeypatch):
    """A misrouted proxy (404), an older API during a deploy (401/403 without a code): logged, and the
    agent keeps beating; only `"code": "given_up"` takes the worker down."""
    from rgrid_runner import agent

    monkeypatch.setenv("RGRID_AGENT_KILLS_GROUP", "0")  # not this test's process group
    server.answer("POST", wire.REGISTER, (404, b"<html>no such route</html>"),
                  (200, {"worker_id": "w-1", "heartbeat_interval_seconds": 0.05}))
    server.answer("POST", wire.HEARTBEAT, (404, b"<html>Not Found</html>"), (401, {"detail": "Unknown key."}),
                  (403, {"detail": "Forbidden by the proxy."}), (200, {"worker_id": "w-1", "running": []}),
                  (403, {"detail": "Worker w-1 was declared dead.", "code": wire.GIVEN_UP}))
    client = WorkerClient(server.url, "rgw_test-token", outage_budget=5.0, timeout=5.0)
    try:
        with pytest.raises(SystemExit) as exit_:
            agent.run(2, "local", WorkerSettings(), client)
    finally:
        client.close()
    assert exit_.value.code == 3
    assert len(server.requests("POST", wire.REGISTER)) == 2  # the 404 was tried again
    assert len(server.requests("POST", wire.HEARTBEAT)) == 5  # three refusals rode out, the given-up one ended it

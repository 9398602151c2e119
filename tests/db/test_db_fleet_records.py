"""The fleet's records on both databases: guarded state moves, retiring only idle workers, the
records brought in line with the servers, and the cluster view's workers and fleet events."""
from __future__ import annotations

from sqlalchemy import update

from rgrid_core.states import ExecutionStatus as S
from rgrid_core.states import WorkerState as W
from rgrid_service import auth, lifecycle
from rgrid_service.db.clock import utcnow
from rgrid_service.db.models import Execution
from rgrid_service.fleet import Server, records
from tests.db.test_db_auth_api import bearer


def states(engine) -> dict[str, str]:
    from sqlalchemy import select

    from rgrid_service.db.models import Worker

    with engine.connect() as conn:
        return dict(conn.execute(select(Worker.id, Worker.state)).all())


def test_records_move_only_along_the_transition_table(engine):
    ids = records.request_workers(engine, 3, "hetzner", "cx23", "fsn1", 2)
    assert ids == ["w-1", "w-2", "w-3"]
    assert records.move(engine, ids, W.DRAINING) == []  # requested cannot drain
    assert sorted(records.move(engine, ids[:2], W.BOOTING)) == ["w-1", "w-2"]
    assert lifecycle.register_worker(engine, "w-1", "hetzner", 2)  # first heartbeat: active
    lifecycle.declare_dead(engine, "w-2", "no heartbeat")
    assert records.move(engine, ["w-2"], W.ACTIVE) == []  # dead stays dead
    assert not lifecycle.register_worker(engine, "w-2", "hetzner", 2)
    assert states(engine) == {"w-1": "active", "w-2": "dead", "w-3": "requested"}
    assert [d.worker_id for d in records.desired_servers(engine, "hetzner")] == ["w-1", "w-3"]
    assert records.request_workers(engine, 1, "hetzner", "cx23", "fsn1", 2) == ["w-4"]  # ids never reused
    # A worker an operator retired is never made active again by a plan that kept it.
    assert records.retire_by_hand(engine, "w-1") == W.DRAINING
    assert records.move(engine, ["w-1"], W.ACTIVE) == [] and states(engine)["w-1"] == "draining"
    assert records.retired_by_hand(engine, {"w-1", "w-3"}) == ["w-1"]


def test_a_draining_worker_is_deleted_only_while_idle(engine, make_execution):
    records.request_workers(engine, 2, "hetzner", "cx23", "fsn1", 2)
    for w in ("w-1", "w-2"):
        lifecycle.register_worker(engine, w, "hetzner", 2)
    records.move(engine, ["w-1", "w-2"], W.DRAINING)
    busy = make_execution()
    lifecycle.claim_run(engine, busy, "w-2")  # a run claimed on w-2 between the decision and the move
    queued = make_execution()
    lifecycle.mark_dispatched(engine, [(queued, "w-1")])
    assert records.retire_idle(engine, ["w-1", "w-2"]) == []  # w-1 has a run dispatched to it
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == queued).values(status=S.CANCELED, finished_at=utcnow()))
    assert records.retire_idle(engine, ["w-1", "w-2"]) == ["w-1"]
    assert states(engine) == {"w-1": "deleting", "w-2": "draining"}
    assert lifecycle.heartbeat(engine, "w-2") and not lifecycle.heartbeat(engine, "w-1")


def test_records_follow_the_servers_after_an_update(engine, api):
    records.request_workers(engine, 3, "hetzner", "cx23", "fsn1", 2)
    lifecycle.register_worker(engine, "w-3", "hetzner", 2)
    records.move(engine, ["w-3"], W.DRAINING)
    records.retire_idle(engine, ["w-3"])
    changed = records.record_servers(engine, "hetzner", [Server("w-1", "101", "running"), Server("w-2", "102", "running")])
    assert changed == {"booting": ["w-1", "w-2"], "deleted": ["w-3"]}
    assert states(engine) == {"w-1": "booting", "w-2": "booting", "w-3": "deleted"}
    records.record_event(engine, "error", "Worker limit reached. Upgrade account or wait for workers to free up.",
                         "provisioning", 1.5, ok=False)
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    view = api.get("/v1/cluster", headers=bearer(key)).json()
    assert {w["id"]: w["server_id"] for w in view["workers"]} == {"w-1": "101", "w-2": "102"}
    assert view["workers"][0]["server_type"] == "cx23"
    [event] = view["fleet_events"]
    assert event["message"].startswith("Worker limit reached") and event["ok"] is False

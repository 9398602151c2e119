"""A run's stage times through request → dispatch → claim → renew → finish, and what a queued run
waits for, as the API shows them, on SQLite and PostgreSQL."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import insert, select, text, update

from rgrid_core.states import ExecutionStatus as S
from rgrid_core.states import WorkerState
from rgrid_service import auth, lifecycle
from rgrid_service.api import progress
from rgrid_service.db.clock import utcago, utcnow
from rgrid_service.db.models import Execution, ExecutionAttempt, FleetEvent, Worker
from rgrid_service.fleet import records
from tests.db.test_db_auth_api import bearer, body


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def queue(engine, ex_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex_id).values(status=S.QUEUED, queued_at=utcnow()))


def test_utcago_is_the_database_clock_minus_seconds(engine):
    with engine.connect() as conn:
        now, ago = conn.execute(select(utcnow(), utcago(2.5))).one()
    now, ago = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in (now, ago))
    assert timedelta(seconds=2.45) <= now - ago <= timedelta(seconds=2.55), (now, ago)


def test_every_stage_gets_its_time_in_order(api, engine):
    key = auth.create_key(engine, "tenant-a")
    ex_id = api.post("/v1/executions", json=body(), headers=bearer(key)).json()["id"]
    assert api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()["stage"] == "created"
    queue(engine, ex_id)
    shown = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert shown["stage"] == "queued" and [s["stage"] for s in shown["timeline"]] == ["queued"]
    assert shown["waiting"]["kind"] == "slot", shown["waiting"]

    # The fleet asks for a worker: the queued run, never dispatched, gets provisioning_at once.
    [worker] = records.request_workers(engine, 1, "process", "cx22", "nbg1", 2)
    first = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert first["stage"] == "provisioning"
    assert first["waiting"]["kind"] == "provisioning" and first["waiting"]["worker_id"] == worker
    assert first["waiting"]["sentence"].startswith("Provisioning worker… (")
    records.request_workers(engine, 1, "process", "cx22", "nbg1", 2)
    again = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert again["timeline"][1] == first["timeline"][1]

    # Its server exists: booting, with no boots yet to estimate from.
    records.move(engine, [worker], WorkerState.BOOTING)
    assert api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()["waiting"]["sentence"] == \
        f"Worker {worker} is booting…"

    lifecycle.register_worker(engine, worker, "process", 2)
    lifecycle.mark_dispatched(engine, [(ex_id, worker)])
    shown = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert shown["stage"] == "dispatched" and shown["waiting"]["sentence"] == f"Starting on worker {worker}…"

    lease, _ = lifecycle.claim_run(engine, ex_id, worker)
    shown = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert shown["stage"] == "staging" and shown["waiting"] is None

    # The script started 0.2 s ago: the first renew carries it, as a database time.
    time.sleep(0.5)
    assert lifecycle.renew(engine, lease, [("stdout", b"hi\n")], stages={"running": 0.2})
    shown = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert shown["stage"] == "running"
    staging, running = (at(s["at"]) for s in shown["timeline"] if s["stage"] in ("staging", "running"))
    with engine.connect() as conn:
        beat = conn.execute(select(Execution.heartbeat_at).where(Execution.id == ex_id)).scalar_one()
    assert staging < running and timedelta(seconds=0.15) <= beat - running <= timedelta(seconds=0.25), (running, beat)
    # A later renew does not move it.
    time.sleep(0.05)
    assert lifecycle.renew(engine, lease, stages={"running": 0.0})
    assert api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()["timeline"] == shown["timeline"]

    # Finish fills what no renew wrote (uploading), keeps what one did (running).
    assert lifecycle.finish(engine, lease, S.SUCCEEDED, 0, None, [], stages={"running": 5.0, "uploading": 0.0})
    done = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    assert [s["stage"] for s in done["timeline"]] == ["queued", "provisioning", "dispatched", "staging", "running",
                                                      "uploading", "finished"]
    times = [at(s["at"]) for s in done["timeline"]]
    assert times == sorted(times), done["timeline"]
    assert done["stage"] == "finished" and done["waiting"] is None
    assert at(done["attempts"][0]["running_at"]) == running and done["attempts"][0]["uploading_at"]
    [listed] = api.get("/v1/executions", headers=bearer(key)).json()
    assert listed["timeline"] == done["timeline"]


def test_a_requeued_run_starts_its_timeline_again(engine, make_execution):
    ex_id = make_execution("queued", queued_at=datetime(2026, 1, 1))
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex_id).values(queued_at=utcnow(),
                                                                           provisioning_at=utcnow()))
    lifecycle.register_worker(engine, "w-1", "process", 2)
    lease, _ = lifecycle.claim_run(engine, ex_id, "w-1")
    assert lifecycle.renew(engine, lease, stages={"running": 0.0})
    lifecycle.declare_dead(engine, "w-1", "test")
    from rgrid_service.api.schemas import ExecutionView
    from rgrid_service.api.queries import attempts, owned

    view = ExecutionView.of(owned(engine, "tenant-a", ex_id), attempts(engine, ex_id))
    assert view.status == S.QUEUED and [s.stage for s in view.timeline] == ["queued"]
    assert view.attempts[0].running_at is not None
    with engine.connect() as conn:  # its wait for capacity starts anew too
        assert conn.execute(select(Execution.provisioning_at).where(Execution.id == ex_id)).scalar() is None


def test_queue_position_waiting_sentences_and_the_boot_estimate(engine, make_execution):
    base = datetime(2026, 1, 1, 12)
    # queued_at as submit writes it (the database clock), the last two at the same instant
    ids = [make_execution("queued", queued_at=utcago(10 - i)) for i in range(3)]
    ids.append(make_execution("queued", queued_at=select(Execution.queued_at).where(Execution.id == ids[2])
                              .scalar_subquery()))
    ids[2:] = sorted(ids[2:])
    make_execution("succeeded", queued_at=base - timedelta(hours=1))  # history does not count
    with engine.connect() as conn:
        third = conn.execute(select(Execution).where(Execution.id == ids[2])).one()
        assert progress.queue_position(conn, third) == (3, 4)
    assert progress.waiting_of(engine, third).sentence == "Waiting for a free slot (3rd of 4 queued)"

    # Two past boots of 40 and 60 s; a worker booting for 20 s has about 30 s left.
    with engine.begin() as conn:
        for wid, boot in (("w-1", 40), ("w-2", 60)):
            conn.execute(insert(Worker).values(id=wid, provider="process", state=WorkerState.ACTIVE, slots=2,
                                               created_at=base, active_at=base + timedelta(seconds=boot)))
        conn.execute(insert(Worker).values(id="w-3", provider="process", state=WorkerState.BOOTING, slots=2,
                                           created_at=utcago(20)))
    w = progress.waiting_of(engine, third)
    assert w.kind == "booting" and w.worker_id == "w-3", w
    assert 25 <= w.seconds_left <= 31 and w.sentence.startswith("Worker w-3 is booting (about "), w

    # A requested worker and a failed fleet update: the failure in the plan's words; an update that
    # went through afterwards clears it.
    with engine.begin() as conn:
        conn.execute(insert(Worker).values(id="w-4", provider="process", state=WorkerState.REQUESTED, slots=2,
                                           created_at=utcnow()))
    records.record_event(engine, "error", "Cloud provider error. Retrying... (attempt 2/3): 503 injected", ok=False)
    w = progress.waiting_of(engine, third)
    assert (w.kind, w.sentence, w.attempt) == ("provider", "Cloud provider error. Retrying... (attempt 2/3)", "2/3")
    records.record_event(engine, "decision", "requested w-5: …")
    assert progress.waiting_of(engine, third).kind == "provider"
    records.record_event(engine, "update", "created w-4")
    assert progress.waiting_of(engine, third).kind == "booting"


def test_the_queue_position_reads_an_index_not_history(engine, make_execution):
    if engine.dialect.name != "sqlite":
        return  # the plan below is SQLite's; PostgreSQL's planner prefers a scan on a tiny table
    ex_id = make_execution("queued", queued_at=datetime(2026, 1, 1))
    with engine.connect() as conn:
        sql = str(progress.position_query(ex_id).compile(conn, compile_kwargs={"literal_binds": True}))
        plan = [str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    assert any(p.startswith("SEARCH executions USING") and "INDEX" in p and "(status=?" in p for p in plan), plan
    assert not any(p.startswith("SCAN executions") for p in plan), plan

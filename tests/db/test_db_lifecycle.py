"""Lifecycle semantics against a real database: atomic claim, fencing, cancel, submit, raw log bytes."""
from __future__ import annotations

import multiprocessing
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from rgrid_service import lifecycle
from rgrid_service.db.models import Execution, ExecutionAttempt, ExecutionOutput, LogChunk
from rgrid_service.db.session import make_engine
from tests.db.claims import claim

HERE = Path(__file__).resolve().parent


def row(engine, execution_id):
    with engine.connect() as conn:
        return conn.execute(select(Execution.__table__).where(Execution.id == execution_id)).one()


def count(engine, model, execution_id) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(model).where(model.execution_id == execution_id)
        ).scalar_one()


def attempts(engine, execution_id):
    with engine.connect() as conn:
        return conn.execute(
            select(ExecutionAttempt.__table__)
            .where(ExecutionAttempt.execution_id == execution_id)
            .order_by(ExecutionAttempt.attempt)
        ).all()


def output(path: str) -> dict:
    return dict(path=path, size=3, sha256="a" * 64, object_key=f"k/{path}")


def test_claim_race_threads_exactly_one_winner(db_url, make_execution, engine):
    execution_id = make_execution()
    n = 16
    barrier = threading.Barrier(n, timeout=60)
    results: dict[str, object] = {}
    errors: list[BaseException] = []
    engines = [make_engine(db_url) for _ in range(n)]

    def worker(i: int) -> None:
        try:
            with engines[i].connect() as conn:  # race the UPDATE, not the connect
                conn.execute(text("SELECT 1"))
            barrier.wait()
            results[f"w-{i}"] = claim(engines[i], execution_id, f"w-{i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for e in engines:
            e.dispose()
    assert not errors, errors
    assert len(results) == n
    winners = {w: lease for w, lease in results.items() if lease is not None}
    assert len(winners) == 1, results
    (winner, lease), = winners.items()
    assert lease == lifecycle.Lease(execution_id, 1, winner)

    r = row(engine, execution_id)
    assert (r.status, r.attempt, r.worker_id) == ("running", 1, winner)
    rows = attempts(engine, execution_id)
    assert [(a.attempt, a.worker_id) for a in rows] == [(1, winner)]


def test_claim_race_processes_exactly_one_winner(db_url, make_execution, engine):
    execution_id = make_execution()
    n = 8
    if str(HERE) not in sys.path:  # spawned children inherit sys.path and import db_race_child from it
        sys.path.insert(0, str(HERE))
    import db_race_child

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n, timeout=90)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=db_race_child.race, args=(db_url, execution_id, f"p-{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in range(n)]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [(w, err) for w, _, err in got if err]
    assert not errors, errors
    winners = [(w, attempt) for w, attempt, _ in got if attempt is not None]
    assert len(winners) == 1, got
    winner, attempt = winners[0]
    assert attempt == 1
    r = row(engine, execution_id)
    assert (r.status, r.attempt, r.worker_id) == ("running", 1, winner)
    assert [(a.attempt, a.worker_id) for a in attempts(engine, execution_id)] == [(1, winner)]


def test_stale_lease_is_fenced_off_after_requeue(engine, make_execution):
    execution_id = make_execution()
    stale = claim(engine, execution_id, "w-1")
    assert stale is not None and stale.attempt == 1

    # The orchestrator re-queues it behind the first worker's back (e.g. after a partition).
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == execution_id).values(status="queued"))
    fresh = claim(engine, execution_id, "w-2")
    assert fresh == lifecycle.Lease(execution_id, 2, "w-2")

    # The zombie can no longer write anything.
    assert lifecycle.renew(engine, stale, [("stdout", b"zombie output\n")]) is False
    assert count(engine, LogChunk, execution_id) == 0
    assert lifecycle.finish(engine, stale, "succeeded", 0, None, [output("result.txt")]) is False
    assert count(engine, ExecutionOutput, execution_id) == 0
    r = row(engine, execution_id)
    assert (r.status, r.attempt, r.worker_id, r.exit_code, r.log_bytes) == ("running", 2, "w-2", None, 0)

    # The fresh lease works, and everything it writes carries attempt 2.
    assert lifecycle.renew(engine, fresh, [("stdout", b"hello\n"), ("system", b"note")]) is True
    with engine.connect() as conn:
        chunks = conn.execute(select(LogChunk.attempt, LogChunk.stream, LogChunk.data)
                              .where(LogChunk.execution_id == execution_id).order_by(LogChunk.id)).all()
    assert [tuple(c) for c in chunks] == [(2, "stdout", b"hello\n"), (2, "system", b"note")]
    assert row(engine, execution_id).log_bytes == len(b"hello\n")  # system lines are not counted

    assert lifecycle.finish(engine, fresh, "succeeded", 0, None, [output("result.txt"), output("b.csv")]) is True
    with engine.connect() as conn:
        outs = conn.execute(select(ExecutionOutput.path, ExecutionOutput.attempt)
                            .where(ExecutionOutput.execution_id == execution_id).order_by(ExecutionOutput.path)).all()
    assert [tuple(o) for o in outs] == [("b.csv", 2), ("result.txt", 2)]
    r = row(engine, execution_id)
    assert (r.status, r.attempt, r.exit_code) == ("succeeded", 2, 0)
    assert r.finished_at is not None
    by_attempt = {a.attempt: a for a in attempts(engine, execution_id)}
    assert by_attempt[2].outcome == "succeeded" and by_attempt[2].finished_at is not None
    assert by_attempt[1].outcome is None  # the zombie never got to record anything

    # Once finished, even the winning lease is fenced off.
    assert lifecycle.renew(engine, fresh) is False
    assert lifecycle.finish(engine, fresh, "failed", 1, "late", []) is False
    assert row(engine, execution_id).status == "succeeded"


def test_cancel_fences_a_running_attempt(engine, make_execution):
    execution_id = make_execution()
    lease = claim(engine, execution_id, "w-1")
    assert lease is not None

    assert lifecycle.cancel(engine, execution_id) is True
    r = row(engine, execution_id)
    assert r.status == "canceled" and r.finished_at is not None

    assert lifecycle.renew(engine, lease, [("stdout", b"still running\n")]) is False
    assert lifecycle.finish(engine, lease, "succeeded", 0, None, [output("r.txt")]) is False
    assert row(engine, execution_id).status == "canceled"
    assert count(engine, LogChunk, execution_id) == 0
    assert count(engine, ExecutionOutput, execution_id) == 0
    (a,) = attempts(engine, execution_id)
    assert (a.attempt, a.outcome) == (1, "canceled") and a.finished_at is not None

    # Canceling again changes nothing.
    assert lifecycle.cancel(engine, execution_id) is False
    assert row(engine, execution_id).status == "canceled"


def test_cancel_of_queued_execution_prevents_claim(engine, make_execution):
    execution_id = make_execution()
    assert lifecycle.cancel(engine, execution_id) is True
    assert claim(engine, execution_id, "w-1") is None
    r = row(engine, execution_id)
    assert (r.status, r.attempt, r.worker_id) == ("canceled", 0, None)
    assert attempts(engine, execution_id) == []


def test_submit_moves_uploading_to_queued_once(engine, make_execution):
    execution_id = make_execution(status="uploading")
    assert claim(engine, execution_id, "w-early") is None  # not claimable before submit
    assert lifecycle.submit(engine, execution_id) is True
    r = row(engine, execution_id)
    assert r.status == "queued" and r.queued_at is not None
    assert lifecycle.submit(engine, execution_id) is False
    assert row(engine, execution_id).queued_at == r.queued_at

    running = make_execution(status="queued")
    assert claim(engine, running, "w-1") is not None
    assert lifecycle.submit(engine, running) is False
    assert row(engine, running).status == "running"


def test_log_chunks_keep_arbitrary_bytes(engine, make_execution):
    execution_id = make_execution()
    lease = claim(engine, execution_id, "w-1")
    raw = b"\xff\xfe\x00abc"
    every_byte = bytes(range(256))
    assert lifecycle.renew(engine, lease, [("stdout", raw), ("stderr", every_byte)]) is True
    with engine.connect() as conn:
        got = conn.execute(select(LogChunk.stream, LogChunk.data)
                           .where(LogChunk.execution_id == execution_id).order_by(LogChunk.id)).all()
    assert [tuple(g) for g in got] == [("stdout", raw), ("stderr", every_byte)]
    assert isinstance(got[0].data, bytes)
    assert row(engine, execution_id).log_bytes == len(raw) + 256


def test_renew_heartbeat_uses_database_clock(engine, make_execution):
    execution_id = make_execution()
    lease = claim(engine, execution_id, "w-1")
    before = row(engine, execution_id).heartbeat_at
    assert before is not None
    assert lifecycle.renew(engine, lease, truncated=True) is True
    r = row(engine, execution_id)
    assert r.heartbeat_at >= before
    assert r.log_truncated is True


@pytest.mark.parametrize("status", ["succeeded", "failed", "timed_out", "canceled", "lost"])
def test_terminal_executions_cannot_be_claimed_or_canceled(engine, make_execution, status):
    execution_id = make_execution(status=status)
    assert claim(engine, execution_id, "w-1") is None
    assert lifecycle.cancel(engine, execution_id) is False
    assert row(engine, execution_id).status == status


def test_reads_are_not_blocked_by_an_open_write_transaction(db_url, engine):
    """API reads (status, logs, the orchestrator's snapshot) go on while a writer holds its lock."""
    import threading

    from sqlalchemy import text

    from rgrid_service.db.session import write_tx

    holding, release = threading.Event(), threading.Event()

    def writer():
        with write_tx(engine) as conn:
            conn.execute(text("UPDATE workers SET slots = slots WHERE 1 = 0"))
            conn.execute(text("INSERT INTO tenants (id, name) VALUES ('w-holder', 'x')"))
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(30)
        done = threading.Event()

        def reader():
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*) FROM tenants")).scalar()
            done.set()

        r = threading.Thread(target=reader)
        r.start()
        # The reader must finish while the writer still holds its transaction open.
        assert done.wait(20), "a read waited for a write transaction to end"
    finally:
        release.set()
        t.join(30)


def test_expired_lease_is_handed_back_and_its_runner_fenced(engine, make_execution):
    from datetime import timedelta

    ex_id = make_execution(max_attempts=2)
    lease = claim(engine, ex_id, "w-1")
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
    # A fresh lease is left alone.
    assert lifecycle.expire_leases(engine, now - timedelta(seconds=60)) == []
    # Its runner died (no renew for long): the run goes back to the queue, with the reason.
    assert lifecycle.expire_leases(engine, now + timedelta(seconds=1)) == [(ex_id, "queued")]
    with engine.connect() as conn:
        ex = conn.execute(select(Execution.status, Execution.reason).where(Execution.id == ex_id)).one()
        outcome = conn.execute(select(ExecutionAttempt.outcome).where(
            ExecutionAttempt.execution_id == ex_id, ExecutionAttempt.attempt == 1)).scalar_one()
    assert ex.status == "queued" and "stopped renewing its lease" in ex.reason and outcome == "lost"
    assert lifecycle.renew(engine, lease) is False
    assert lifecycle.finish(engine, lease, "succeeded", 0, None, []) is False
    # The second and last attempt expires too: lost, not queued again.
    second = claim(engine, ex_id, "w-2")
    assert second.attempt == 2
    assert lifecycle.expire_leases(engine, now + timedelta(hours=1)) == [(ex_id, "lost")]


def test_claim_run_returns_the_spec_in_the_claim_itself(engine, make_execution):
    execution_id = make_execution()
    claimed = lifecycle.claim_run(engine, execution_id, "w1")
    assert claimed is not None
    lease, spec = claimed
    assert lease.attempt == 1 and lease.worker_id == "w1"
    assert (spec.script, spec.args, spec.env, spec.runtime) == ("s.py", [], {}, "python:3.11")
    assert lifecycle.claim_run(engine, execution_id, "w2") is None  # one winner, as claim()


def test_verified_inputs_are_kept_once_and_forgotten_by_key(engine, make_execution):
    from rgrid_service.db.models import Blob
    from rgrid_service.db.session import write_tx

    execution_id = make_execution(status="uploading")
    blob = dict(sha256="a" * 64, size=3, md5="b" * 32, object_key="blobs/t/" + "a" * 64)
    assert lifecycle.submit(engine, execution_id, [blob, dict(blob, name="copy.txt")], "tenant-a")
    # The same content recorded again (a concurrent upload) is no error and keeps one row.
    with write_tx(engine) as conn:
        lifecycle.remember_blobs(conn, "tenant-a", [blob])
    with engine.connect() as conn:
        rows = conn.execute(select(Blob.tenant_id, Blob.sha256, Blob.size, Blob.md5)).all()
    assert rows == [("tenant-a", "a" * 64, 3, "b" * 32)]
    assert lifecycle.forget_blob(engine, blob["object_key"]) == 1
    assert lifecycle.forget_blob(engine, blob["object_key"]) == 0


def test_a_submit_that_loses_the_race_keeps_nothing(engine, make_execution):
    from rgrid_service.db.models import Blob

    execution_id = make_execution(status="queued")  # already submitted
    blob = dict(sha256="c" * 64, size=1, md5="d" * 32, object_key="k")
    assert lifecycle.submit(engine, execution_id, [blob], "tenant-a") is False
    with engine.connect() as conn:
        assert conn.execute(select(Blob)).first() is None


def test_release_dispatches_puts_back_only_the_named_runs_still_queued(engine, make_execution):
    """The dispatch tick's undo for runs it sent to a node Ray no longer has: they are placed
    again; a run claimed meanwhile, or another run placed on the same worker, stays as it is."""
    sent = make_execution()
    other = make_execution()
    running = make_execution(status="running", worker_id="w-1")
    assert lifecycle.mark_dispatched(engine, [(sent, "w-1"), (other, "w-1")]) == [(sent, "w-1"), (other, "w-1")]
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == running).values(dispatched_to="w-1",
                                                                               dispatched_at=lifecycle.utcnow()))
    lifecycle.release_dispatches(engine, [sent, running])
    assert (row(engine, sent).dispatched_at, row(engine, sent).dispatched_to) == (None, None)
    assert row(engine, other).dispatched_to == "w-1"
    assert (row(engine, running).status, row(engine, running).dispatched_to) == ("running", "w-1")


def test_finish_commits_the_last_log_chunks_with_the_status_and_a_fenced_one_none(engine, make_execution):
    """A finish carrying the script's last output writes it in the same transaction as the status
    (log_bytes counts all but system notes, truncated sticks); a stale attempt's carries nothing in."""
    execution_id = make_execution()
    stale = claim(engine, execution_id, "w-1")
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == execution_id).values(status="queued"))
    fresh = claim(engine, execution_id, "w-2")
    assert lifecycle.finish(engine, stale, "succeeded", 0, None, [], chunks=[("stdout", b"zombie\n")]) is False
    assert count(engine, LogChunk, execution_id) == 0
    assert lifecycle.renew(engine, fresh, [("stdout", b"early\n")]) is True
    assert lifecycle.finish(engine, fresh, "failed", 1, "The script exited with code 1.", [],
                            chunks=[("stderr", b"late\n"), ("system", b"note")], truncated=True) is True
    with engine.connect() as conn:
        chunks = conn.execute(select(LogChunk.stream, LogChunk.data, LogChunk.attempt)
                              .where(LogChunk.execution_id == execution_id).order_by(LogChunk.id)).all()
    assert [(c.stream, bytes(c.data), c.attempt) for c in chunks] == [
        ("stdout", b"early\n", 2), ("stderr", b"late\n", 2), ("system", b"note", 2)]
    r = row(engine, execution_id)
    assert (r.status, r.log_bytes, bool(r.log_truncated)) == ("failed", len(b"early\nlate\n"), True)
    # The same finish again (its answer lost) commits nothing twice.
    assert lifecycle.finish(engine, fresh, "failed", 1, "The script exited with code 1.", [],
                            chunks=[("stderr", b"late\n")]) is False
    assert count(engine, LogChunk, execution_id) == 3

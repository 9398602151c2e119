"""Execution state transitions, each one a single conditional write.

The claim increments `attempt`, which then acts as a fencing token: every later write of that run
carries `attempt = :a AND status = 'running'`, so a run that was canceled or re-queued behind its
back can no longer touch the execution (zero rows updated means "you are fenced off").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta

from sqlalchemy import Boolean, Integer, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from .db.clock import utcago, utcnow
from .db.session import write_tx
from .db.models import Execution, ExecutionAttempt, ExecutionOutput, LogChunk
from rgrid_core.states import ExecutionStatus, WorkerState, sources_of

log = logging.getLogger("rgrid.lifecycle")


# Worker states the control plane has given up on: such a worker's agent takes it down.
GIVEN_UP = (WorkerState.DEAD, WorkerState.DELETING, WorkerState.DELETED)


def token_revoked() -> dict:
    """Spread into the .values() of every UPDATE that gives a worker up (dead, deleting, deleted):
    its worker token stops being honoured in the same statement (an earlier revocation is kept)."""
    from .db.models import Worker

    return {"token_revoked_at": func.coalesce(Worker.token_revoked_at, utcnow())}


# Spread into the .values() of every UPDATE that ends a run: its env values leave the database in
# the same statement (sealed ones and plain ones of rows written before sealing alike).
ENV_GONE = {"env_sealed": None, "env": {}}


@dataclass(frozen=True)
class Lease:
    execution_id: str
    attempt: int
    worker_id: str


def db_now(conn: Connection) -> datetime:
    """The database clock: every lease and heartbeat comparison uses it, never the local one."""
    value = conn.execute(select(utcnow())).scalar_one()
    if isinstance(value, str):  # SQLite without type hints on a bare select
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def _fence(lease: Lease):
    # The worker too: an attempt number is easy to guess, so another worker's token naming it
    # must not pass as this attempt.
    return (
        Execution.id == lease.execution_id,
        Execution.attempt == lease.attempt,
        Execution.status == ExecutionStatus.RUNNING,
        Execution.worker_id == lease.worker_id,
    )


# What a runner needs to start a run, read in the claim's own statement (no second query). The env
# values are in `env_sealed` (opened by the API, rgrid_service.secrets), or in `env` on rows
# written before they were sealed.
RUN_SPEC = (Execution.script, Execution.args, Execution.env, Execution.env_sealed, Execution.runtime,
            Execution.timeout_seconds, Execution.inputs, Execution.tenant_id, Execution.requirements)


def _worker_takes_runs(worker_id: str):
    """The claiming worker is active and its token not revoked (a dead, draining or deleted one
    takes nothing new)."""
    from .db.models import Worker

    return select(Worker.id).where(Worker.id == worker_id, Worker.state == WorkerState.ACTIVE,
                                   Worker.token_revoked_at.is_(None)).exists()


def _worker_not_given_up(worker_id: str):
    """The worker exists, is not dead, deleting or deleted, and its token is not revoked: the
    worker API folds this into its fenced writes instead of reading the worker first."""
    from .db.models import Worker

    return select(Worker.id).where(Worker.id == worker_id, Worker.state.not_in(GIVEN_UP),
                                   Worker.token_revoked_at.is_(None)).exists()


@lru_cache(maxsize=None)
def _claim_statements(dispatched: bool):
    """The claim's statements, built once: every run's path executes them with its own values,
    and building the same statements again per claim was a measurable share of the API's work."""
    wid = bindparam("wid")
    guard = (Execution.dispatched_to == wid, _worker_takes_runs(wid)) if dispatched else ()
    now = utcnow()  # one time for both: a lease whose heartbeat_at is still its started_at was never renewed
    take = (
        update(Execution)
        .where(Execution.id == bindparam("eid"), Execution.status == ExecutionStatus.QUEUED, *guard)
        .values(status=ExecutionStatus.RUNNING, attempt=Execution.attempt + 1, worker_id=wid, started_at=now,
                heartbeat_at=now, finished_at=None, exit_code=None, log_bytes=0, log_truncated=False)
        .returning(Execution.attempt, *RUN_SPEC)
    )
    # The runner's own record of how many runs its worker holds, this one included.
    on_worker = select(func.count()).where(Execution.worker_id == wid, Execution.status == ExecutionStatus.RUNNING)
    attempt = insert(ExecutionAttempt).values(
        execution_id=bindparam("eid"), attempt=bindparam("n"), worker_id=wid, started_at=utcnow(),
        running_on_worker=on_worker.scalar_subquery())
    return take, attempt


def claim_run(engine: Engine, execution_id: str, worker_id: str, dispatched: bool = False):
    """Atomically take a queued execution: (lease, the run's spec: script, args, env, env_sealed,
    runtime, timeout_seconds, inputs, tenant_id), or None when somebody else has it (or it was
    canceled). `dispatched` (the worker API): only a run dispatched to this worker, and only while
    the worker is active, in the same statement. The run's kept inputs are marked used."""
    take, attempt = _claim_statements(dispatched)
    with write_tx(engine) as conn:
        row = conn.execute(take, {"eid": execution_id, "wid": worker_id}).first()
        if row is None:
            return None
        _mark_blobs_used(conn, row.tenant_id, row.inputs)
        conn.execute(attempt, {"eid": execution_id, "wid": worker_id, "n": row.attempt})
    return Lease(execution_id, row.attempt, worker_id), row


def repeat_claim(engine: Engine, execution_id: str, worker_id: str):
    """The claim this worker already made, as claim_run answered it, while its attempt has done
    nothing yet (never renewed: no log, no stage, heartbeat_at still the claim's time); else None.
    A claim whose answer was lost (a 504, a read timeout after the commit) is asked again: without
    this it would be answered 409 and the run would strand until its lease expired."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Execution.attempt, *RUN_SPEC)
            .join(ExecutionAttempt, (ExecutionAttempt.execution_id == Execution.id)
                  & (ExecutionAttempt.attempt == Execution.attempt))
            .where(Execution.id == execution_id, Execution.status == ExecutionStatus.RUNNING,
                   Execution.worker_id == worker_id, Execution.dispatched_to == worker_id,
                   Execution.log_bytes == 0, Execution.heartbeat_at == Execution.started_at,
                   ExecutionAttempt.worker_id == worker_id, ExecutionAttempt.running_at.is_(None),
                   ExecutionAttempt.uploading_at.is_(None), ExecutionAttempt.finished_at.is_(None))
        ).first()
    if row is None:
        return None
    return Lease(execution_id, row.attempt, worker_id), row


@lru_cache(maxsize=None)
def _blobs_used_statement(one: bool):
    """For one key `object_key = :key`, else an expanding IN, which SQLAlchemy renders into the
    SQL again at every execution: for the usual run, one kept input, that cost a third of this
    statement's CPU."""
    from .db.models import Blob

    which = Blob.object_key == bindparam("key") if one else Blob.object_key.in_(bindparam("keys", expanding=True))
    return update(Blob).where(Blob.tenant_id == bindparam("tid"), which).values(last_used_at=utcnow())


def _mark_blobs_used(conn: Connection, tenant_id: str, inputs: list[dict]) -> None:
    """Retention keeps inputs in use: the kept blobs this run reads get their last use now."""
    keys = [i["object_key"] for i in inputs or () if i.get("object_key", "").startswith("blobs/")]
    if len(keys) == 1:
        conn.execute(_blobs_used_statement(True), {"tid": tenant_id, "key": keys[0]})
    elif keys:
        conn.execute(_blobs_used_statement(False), {"tid": tenant_id, "keys": keys})


# The attempt's stage times the runner reports (the claim itself is the start of staging).
ATTEMPT_STAGES = {"running": ExecutionAttempt.running_at, "uploading": ExecutionAttempt.uploading_at}


def _stage_values(stages: dict[str, float] | None) -> dict:
    """The attempt's stage times not written yet, from stage -> seconds ago (timed on the runner's
    monotonic clock, turned into database time here); a time already written is kept."""
    return {ATTEMPT_STAGES[s].key: func.coalesce(ATTEMPT_STAGES[s], utcago(ago)) for s, ago in (stages or {}).items()}


def _stage_times(conn: Connection, lease: Lease, stages: dict[str, float] | None) -> None:
    """Write the stage times within a renew (an extra statement only when there are some)."""
    if stages:
        conn.execute(
            update(ExecutionAttempt)
            .where(ExecutionAttempt.execution_id == lease.execution_id, ExecutionAttempt.attempt == lease.attempt)
            .values(_stage_values(stages))
        )


def renew(
    engine: Engine,
    lease: Lease,
    chunks: list[tuple[str, bytes]] = (),
    truncated: bool = False,
    stages: dict[str, float] | None = None,
    worker_alive: bool = False,
) -> bool:
    """Heartbeat the run and append log chunks, only while the lease holds. False = fenced off.
    `stages` (stage -> seconds ago) records when the script started or its outputs began going up.
    `worker_alive`: and only while the lease's worker is not given up, in the same statement."""
    added = sum(len(data) for stream, data in chunks if stream != "system")
    with write_tx(engine) as conn:
        values = dict(heartbeat_at=utcnow(), log_bytes=Execution.log_bytes + added)
        if truncated:
            values["log_truncated"] = True
        guard = (_worker_not_given_up(lease.worker_id),) if worker_alive else ()
        res = conn.execute(update(Execution).where(*_fence(lease), *guard).values(**values))
        if res.rowcount != 1:
            return False
        _stage_times(conn, lease, stages)
        if chunks:
            conn.execute(
                insert(LogChunk),
                [
                    dict(execution_id=lease.execution_id, attempt=lease.attempt, stream=s, data=d)
                    for s, d in chunks
                ],
            )
    return True


@lru_cache(maxsize=None)
def _finish_statements(worker_alive: bool, stages: frozenset[str]):
    """The finish's statements for a worker check or none and one set of reported stages, built
    once (see _claim_statements)."""
    fence = (Execution.id == bindparam("eid"), Execution.attempt == bindparam("n"),
             Execution.status == ExecutionStatus.RUNNING, Execution.worker_id == bindparam("wid"))
    guard = (_worker_not_given_up(bindparam("wid")),) if worker_alive else ()
    end = (
        update(Execution).where(*fence, *guard)
        .values(status=bindparam("st"), exit_code=bindparam("code"), reason=bindparam("why"), finished_at=utcnow(),
                log_bytes=Execution.log_bytes + bindparam("added", type_=Integer),
                log_truncated=or_(Execution.log_truncated, bindparam("truncated", type_=Boolean)), **ENV_GONE)
        .returning(Execution.finished_at)
    )
    # A stage time no renew wrote is counted back from finished_at (so a stage a moment ago never
    # lands after it); one already written is kept.
    stage_times = {ATTEMPT_STAGES[s].key: func.coalesce(ATTEMPT_STAGES[s], bindparam(f"at_{s}")) for s in sorted(stages)}
    attempt = (
        update(ExecutionAttempt)
        .where(ExecutionAttempt.execution_id == bindparam("eid"), ExecutionAttempt.attempt == bindparam("n"))
        .values(finished_at=utcnow(), outcome=bindparam("st"), reason=bindparam("why"), **stage_times)
    )
    return end, attempt


def finish(
    engine: Engine,
    lease: Lease,
    status: str,
    exit_code: int | None,
    reason: str | None,
    outputs: list[dict],
    stages: dict[str, float] | None = None,
    worker_alive: bool = False,
    chunks: list[tuple[str, bytes]] = (),
    truncated: bool = False,
) -> bool:
    """Commit the run's result, its outputs and its last log chunks in one transaction, only while
    the lease holds. `stages` (stage -> seconds ago) fills the attempt's stage times no renew
    wrote, counted back from finished_at. `worker_alive`: and only while the lease's worker is not
    given up, in the same statement. `chunks` and `truncated` as renew() takes them: a follower
    that reads the final status therefore finds every chunk already there."""
    stages = {s: ago for s, ago in (stages or {}).items() if s in ATTEMPT_STAGES}
    end, attempt = _finish_statements(worker_alive, frozenset(stages))
    params = {"eid": lease.execution_id, "n": lease.attempt, "wid": lease.worker_id, "st": status,
              "code": exit_code, "why": reason, "truncated": bool(truncated),
              "added": sum(len(data) for stream, data in chunks if stream != "system")}
    with write_tx(engine) as conn:
        done = conn.execute(end, params).first()
        if done is None:
            return False
        if chunks:
            conn.execute(insert(LogChunk), [dict(execution_id=lease.execution_id, attempt=lease.attempt, stream=s, data=d)
                                            for s, d in chunks])
        if outputs:
            conn.execute(
                insert(ExecutionOutput),
                [dict(execution_id=lease.execution_id, attempt=lease.attempt, **o) for o in outputs],
            )
        finished_at = done.finished_at
        if isinstance(finished_at, str):  # SQLite hands back RETURNING's text as it is
            finished_at = datetime.fromisoformat(finished_at)
        conn.execute(attempt, {**params, **{f"at_{s}": finished_at - timedelta(seconds=ago) for s, ago in stages.items()}})
    return True


def submit(engine: Engine, execution_id: str, verified: list[dict] = (), tenant_id: str | None = None,
           inputs: list[dict] | None = None) -> bool:
    """uploading -> queued, once every input has been verified by the caller. `verified` are the
    inputs (sha256, size, md5, object_key) this submit checked: they are kept for reuse, in the
    same transaction as the queueing. `inputs`: the run's inputs as they are now (naming where the
    verified ones are kept), when they changed."""
    with write_tx(engine) as conn:
        res = conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == ExecutionStatus.UPLOADING)
            .values(status=ExecutionStatus.QUEUED, queued_at=utcnow(), **({} if inputs is None else {"inputs": inputs}))
        )
        if res.rowcount != 1:
            return False
        if verified:
            remember_blobs(conn, tenant_id, verified)
        return True


def remember_blobs(conn: Connection, tenant_id: str, specs: list[dict]) -> None:
    """Record verified inputs by content; one already recorded (a concurrent upload) is kept."""
    from .db.models import Blob

    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    rows = {s["sha256"]: dict(tenant_id=tenant_id, sha256=s["sha256"], size=s["size"], md5=s["md5"],
                              object_key=s["object_key"]) for s in specs}
    conn.execute(upsert(Blob).on_conflict_do_nothing(), list(rows.values()))


def forget_blob(engine: Engine, object_key: str, tenant_id: str | None = None, store=None) -> int:
    """A kept input turned out damaged (its sha256 did not match): forget it, so the next
    execution that needs it is asked to upload it again instead of failing the same way.
    `tenant_id` (the worker API): only that tenant's record of it. `store` given: its object
    goes too once no row names it (else it would stay, counted by no quota and seen by no
    retention); one that fails to go is an orphan retention's sweep removes later."""
    from .db.models import Blob
    from sqlalchemy import delete

    only = (Blob.tenant_id == tenant_id,) if tenant_id is not None else ()
    with write_tx(engine) as conn:
        forgotten = conn.execute(delete(Blob).where(Blob.object_key == object_key, *only)).rowcount
        named = conn.execute(select(Blob.sha256).where(Blob.object_key == object_key).limit(1)).first()
    if forgotten and store is not None and named is None:
        try:
            store.client.remove_object(store.bucket, object_key)
        except Exception as e:  # noqa: BLE001 - the row is gone; retention's orphan sweep finishes it
            log.warning("could not delete the damaged object %s (%s); retention will", object_key, e)
    return forgotten


def cancel(engine: Engine, execution_id: str, reason: str = "canceled by the user") -> bool:
    """Cancel whatever is not finished yet; a running attempt learns it at its next renew()."""
    with write_tx(engine) as conn:
        row = conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status.in_((ExecutionStatus.UPLOADING, ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)))
            .values(status=ExecutionStatus.CANCELED, reason=reason, finished_at=utcnow(), **ENV_GONE)
            .returning(Execution.attempt)
        ).first()
        if row is None:
            return False
        conn.execute(
            update(ExecutionAttempt)
            .where(
                ExecutionAttempt.execution_id == execution_id,
                ExecutionAttempt.attempt == row.attempt,
                ExecutionAttempt.finished_at.is_(None),
            )
            .values(finished_at=utcnow(), outcome=ExecutionStatus.CANCELED, reason=reason)
        )
    return True


def mark_dispatched(engine: Engine, placements: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Record (execution, worker) placements; returns those still queued (the ones to send)."""
    sent = []
    with write_tx(engine) as conn:
        for execution_id, worker_id in placements:
            res = conn.execute(
                update(Execution)
                .where(Execution.id == execution_id, Execution.status == ExecutionStatus.QUEUED)
                .values(dispatched_at=utcnow(), dispatched_to=worker_id)
            )
            if res.rowcount == 1:
                sent.append((execution_id, worker_id))
    return sent


def declare_dead(engine: Engine, worker_id: str, reason: str) -> list[tuple[str, str]]:
    """Mark a worker dead and hand its executions back: re-queued while attempts remain, else lost.

    Returns (execution id, new status) for each orphan. Idempotent: a worker already dead is a no-op.
    """
    from .db.models import Worker

    results: list[tuple[str, str]] = []
    with write_tx(engine) as conn:
        marked = conn.execute(
            update(Worker)
            .where(Worker.id == worker_id, Worker.state.in_(sources_of(WorkerState.DEAD)))
            .values(state=WorkerState.DEAD, dead_at=utcnow(), dead_reason=reason, **token_revoked())
        )
        if marked.rowcount != 1:
            return results
        now = db_now(conn).strftime("%H:%M:%S")
        orphans = conn.execute(
            select(Execution.id, Execution.attempt, Execution.max_attempts).where(
                Execution.worker_id == worker_id, Execution.status == ExecutionStatus.RUNNING
            )
        ).all()
        for row in orphans:
            why = f"attempt {row.attempt} on worker {worker_id} lost at {now}: {reason}"
            results.append((row.id, _hand_back(conn, row, why)))
        release_placements(conn, [worker_id])
    return results


def release_placements(conn: Connection, worker_ids: list[str]) -> None:
    """Dispatches placed on these workers but not yet claimed go back to the pool at once."""
    conn.execute(
        update(Execution)
        .where(Execution.status == ExecutionStatus.QUEUED, Execution.dispatched_to.in_(worker_ids))
        .values(dispatched_at=None, dispatched_to=None)
    )


def release_dispatches(engine: Engine, execution_ids: list[str]) -> None:
    """These runs, sent to a node that turned out to be gone, go back to the pool at once (those
    still queued; one claimed meanwhile is running and stays as it is)."""
    with write_tx(engine) as conn:
        conn.execute(
            update(Execution)
            .where(Execution.id.in_(execution_ids), Execution.status == ExecutionStatus.QUEUED)
            .values(dispatched_at=None, dispatched_to=None)
        )


def _hand_back(conn: Connection, row, why: str) -> str:
    """Re-queue one orphaned attempt (or end it as lost), fenced on that attempt still running."""
    from .policies.orphans import Orphan, orphan_outcome

    outcome = orphan_outcome(Orphan(row.id, row.attempt, row.max_attempts))
    values = dict(status=outcome, reason=why, dispatched_at=None, dispatched_to=None)
    if outcome == ExecutionStatus.LOST:
        values.update(finished_at=utcnow(), **ENV_GONE)
    else:
        # Queued again: its wait (and any provisioning for it) starts anew.
        values.update(queued_at=utcnow(), provisioning_at=None)
    res = conn.execute(
        update(Execution)
        .where(Execution.id == row.id, Execution.attempt == row.attempt, Execution.status == ExecutionStatus.RUNNING)
        .values(**values)
    )
    if res.rowcount == 1:
        conn.execute(
            update(ExecutionAttempt)
            .where(ExecutionAttempt.execution_id == row.id, ExecutionAttempt.attempt == row.attempt)
            .values(finished_at=utcnow(), outcome=ExecutionStatus.LOST, reason=why)
        )
    return outcome


def expire_leases(engine: Engine, older_than: datetime) -> list[tuple[str, str]]:
    """Runs whose runner stopped renewing (it died, its worker still alive): hand them back.

    The runner renews at least every lease_check_interval, so a lease older than dead_after means
    nobody is running it any more; a runner that does come back finds itself fenced off.
    """
    results: list[tuple[str, str]] = []
    with write_tx(engine) as conn:
        now = db_now(conn).strftime("%H:%M:%S")
        stale = conn.execute(
            select(Execution.id, Execution.attempt, Execution.max_attempts, Execution.worker_id,
                   Execution.heartbeat_at)
            .where(Execution.status == ExecutionStatus.RUNNING, Execution.heartbeat_at < older_than)
        ).all()
        for row in stale:
            since = row.heartbeat_at.strftime("%H:%M:%S") if row.heartbeat_at else "its start"
            why = (f"attempt {row.attempt} on worker {row.worker_id} lost at {now}: "
                   f"its runner stopped renewing its lease at {since}")
            results.append((row.id, _hand_back(conn, row, why)))
    return results


def register_worker(engine: Engine, worker_id: str, provider: str, slots: int,
                    runtime_images: list[dict] | None = None) -> bool:
    """A worker's agent announces itself: its record (written by the fleet when it asked for the
    server) becomes active. A worker the control plane has given up on (dead, being deleted)
    stays given up: False, and it must come back under a new id. The UPDATE carries the guard
    itself: on PostgreSQL the read takes no lock, so a worker declared dead (or moved to deleting)
    between the read and the write would otherwise be brought back to active. runtime_images: what
    it holds (None: it has no Docker), kept for `rgrid runtimes`."""
    from .db.models import Worker, WorkerHeartbeat

    with write_tx(engine) as conn:
        row = conn.execute(select(Worker.state, Worker.token_revoked_at).where(Worker.id == worker_id)).first()
        if row is not None and (row.state in GIVEN_UP or row.token_revoked_at is not None):
            return False
        if row is None:  # a worker started by hand, outside any fleet
            conn.execute(insert(Worker).values(id=worker_id, provider=provider, state=WorkerState.ACTIVE, slots=slots,
                                               runtime_images=runtime_images))
        elif row.state != WorkerState.DRAINING:
            moved = conn.execute(
                update(Worker)
                .where(Worker.id == worker_id, Worker.state.not_in(GIVEN_UP), Worker.state != WorkerState.DRAINING,
                       Worker.token_revoked_at.is_(None))
                .values(state=WorkerState.ACTIVE, slots=slots, active_at=utcnow()))
            if moved.rowcount == 0:
                now = conn.execute(select(Worker.state, Worker.token_revoked_at).where(Worker.id == worker_id)).first()
                if now is None or now.state != WorkerState.DRAINING or now.token_revoked_at is not None:
                    return False  # given up meanwhile (a drain meanwhile is kept, as above)
        if row is not None:
            conn.execute(update(Worker).where(Worker.id == worker_id).values(runtime_images=runtime_images))
        beat = conn.execute(
            update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
            .values(last_heartbeat_at=utcnow(), running=[])
        )
        if beat.rowcount == 0:
            conn.execute(insert(WorkerHeartbeat).values(worker_id=worker_id, running=[]))
    return True


def heartbeat(engine: Engine, worker_id: str) -> bool:
    """Record that the worker is alive and what it runs. False: it was declared dead meanwhile."""
    return heartbeat_running(engine, worker_id) is not None


def heartbeat_running(engine: Engine, worker_id: str) -> list[str] | None:
    """heartbeat(), returning the runs the control plane has running on the worker; None: the
    worker was given up on (or never registered), and its agent takes it down."""
    from .db.models import Worker, WorkerHeartbeat

    with write_tx(engine) as conn:
        state = conn.execute(select(Worker.state).where(Worker.id == worker_id)).scalar()
        if state not in (WorkerState.ACTIVE, WorkerState.DRAINING):
            return None
        running = conn.execute(
            select(Execution.id).where(Execution.worker_id == worker_id, Execution.status == ExecutionStatus.RUNNING)
        ).scalars().all()
        conn.execute(
            update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
            .values(last_heartbeat_at=utcnow(), running=list(running))
        )
    return list(running)


UPLOADS_EXPIRED = "Its input files were never all uploaded; run it again."


def submit_started(engine: Engine, execution_id: str, started: bool = True) -> bool:
    """Mark (or unmark) a submit in progress on an uploading run: its queued_at is set to now
    before the run is queued, so expire_uploads leaves it alone while the submit verifies and
    copies; a submit that refuses unmarks it. False when the run is no longer uploading."""
    with write_tx(engine) as conn:
        return conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == ExecutionStatus.UPLOADING)
            .values(queued_at=utcnow() if started else None)
        ).rowcount == 1


def expire_uploads(engine: Engine, older_than: datetime) -> list:
    """Executions whose client vanished mid-upload: canceled, so nothing waits on them forever.
    One whose submit started (submit_started) is left to it, unless that submit is as old. The
    canceled ones as rows (id, inputs), whose staged uploads the caller deletes."""
    from sqlalchemy import or_

    with write_tx(engine) as conn:
        res = conn.execute(
            update(Execution)
            .where(Execution.status == ExecutionStatus.UPLOADING, Execution.created_at < older_than,
                   or_(Execution.queued_at.is_(None), Execution.queued_at < older_than))
            .values(status=ExecutionStatus.CANCELED, finished_at=utcnow(), **ENV_GONE,
                    reason=UPLOADS_EXPIRED)
            .returning(Execution.id, Execution.inputs)
        )
        return res.all()


CANCELED_BY_USER = "canceled by the user"


def cancel_batch(engine: Engine, tenant_id: str, batch_id: str, reason: str = CANCELED_BY_USER) -> int:
    """Cancel every unfinished execution of the tenant's batch in one transaction, closing the
    running attempts as cancel() does for one; each running runner learns it at its next renew().
    Returns how many were canceled."""
    from sqlalchemy import bindparam
    from rgrid_core.states import TERMINAL

    unfinished = [s for s in ExecutionStatus if s not in TERMINAL]
    with write_tx(engine) as conn:
        rows = conn.execute(
            update(Execution)
            .where(Execution.tenant_id == tenant_id, Execution.batch_id == batch_id,
                   Execution.status.in_(unfinished))
            .values(status=ExecutionStatus.CANCELED, reason=reason, finished_at=utcnow(), **ENV_GONE)
            .returning(Execution.id, Execution.attempt)
        ).all()
        claimed = [dict(eid=r.id, att=r.attempt) for r in rows if r.attempt > 0]
        if claimed:  # only a run claimed at least once has attempt rows; its open one is closed
            conn.execute(
                update(ExecutionAttempt)
                .where(ExecutionAttempt.execution_id == bindparam("eid"),
                       ExecutionAttempt.attempt == bindparam("att"),
                       ExecutionAttempt.finished_at.is_(None))
                .values(finished_at=utcnow(), outcome=ExecutionStatus.CANCELED, reason=reason),
                claimed,
            )
    return len(rows)

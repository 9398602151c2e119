"""Reads for where a run is: its current attempt (for the stage timeline) and, while it is queued,
what it waits for (gathered here, decided by policies.waiting).

Every query here reads through an index: the queue position counts only `queued` rows (the
status index), workers by state, the fleet's events newest first by id.
"""
from __future__ import annotations

import statistics
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Connection, Engine

from rgrid_core.states import ExecutionStatus, WorkerState

from ..db.models import Execution, ExecutionAttempt, FleetEvent, Worker
from ..lifecycle import db_now
from ..policies.waiting import PendingWorker, Waiting, WaitSnapshot, waiting

RECENT_BOOTS = 5  # the boot estimate is the median of this many of the latest boots


def current_attempts(engine: Engine, executions) -> dict[str, object]:
    """execution id -> its current attempt's row, for executions claimed at least once."""
    keys = [(ex.id, ex.attempt) for ex in executions if ex.attempt]
    if not keys:
        return {}
    t = ExecutionAttempt.__table__
    rows = []
    with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows += conn.execute(select(t).where(t.c.execution_id.in_([k for k, _ in part]))).all()
    wanted = set(keys)
    return {r.execution_id: r for r in rows if (r.execution_id, r.attempt) in wanted}


def position_query(execution_id: str):
    """Queued runs in all, and those ahead of this one in dispatch order (queued_at, id): counted
    over the `queued` rows of the status index only, never the history. The run's own queued_at is
    read in the statement (a value sent back from Python may not compare equal on SQLite, which
    keeps times as text)."""
    mine = select(Execution.queued_at).where(Execution.id == execution_id).scalar_subquery()
    ahead = or_(Execution.queued_at < mine, and_(Execution.queued_at == mine, Execution.id < execution_id))
    return (select(func.count(), func.coalesce(func.sum(case((ahead, 1), else_=0)), 0))
            .where(Execution.status == ExecutionStatus.QUEUED))


def queue_position(conn: Connection, ex) -> tuple[int, int]:
    """(position, queued): the run's place in the queue (1: next) and the queue's length."""
    total, before = conn.execute(position_query(ex.id)).one()
    return int(before) + 1, max(int(total), int(before) + 1)


def boot_estimate(conn: Connection) -> float | None:
    """Median seconds from a worker's record to its first heartbeat, over the latest boots."""
    rows = conn.execute(
        select(Worker.created_at, Worker.active_at).where(Worker.active_at.is_not(None))
        .order_by(Worker.active_at.desc()).limit(RECENT_BOOTS)
    ).all()
    boots = [(r.active_at - r.created_at).total_seconds() for r in rows if r.created_at]
    return statistics.median(boots) if boots else None


def fleet_error(conn: Connection) -> str | None:
    """The sentence of the fleet's latest update when that update failed (None once one went through)."""
    row = conn.execute(
        select(FleetEvent.kind, FleetEvent.message).where(FleetEvent.kind.in_(("update", "error")))
        .order_by(FleetEvent.id.desc()).limit(1)
    ).first()
    return row.message if row is not None and row.kind == "error" else None


def tenant_concurrency(conn: Connection, tenant_id: str, default_limit: int) -> tuple[int | None, int]:
    """(the tenant's limit of concurrent runs or None, its runs running or placed now)."""
    from ..db.models import TenantQuota
    from ..policies.quotas import effective

    own = conn.execute(select(TenantQuota.max_running_runs).where(TenantQuota.tenant_id == tenant_id)).scalar()
    limit = effective(default_limit, own)
    if limit is None:
        return None, 0
    busy = conn.execute(select(func.count()).where(
        Execution.tenant_id == tenant_id,
        or_(Execution.status == ExecutionStatus.RUNNING,
            and_(Execution.status == ExecutionStatus.QUEUED, Execution.dispatched_to.is_not(None)))
    )).scalar_one()
    return limit, int(busy)


def wait_snapshot(conn: Connection, ex, now: datetime | None = None, default_running_limit: int = 0) -> WaitSnapshot:
    position, queued = queue_position(conn, ex)
    tenant_limit, tenant_busy = tenant_concurrency(conn, ex.tenant_id, default_running_limit)
    pending = conn.execute(
        select(Worker.id, Worker.state, Worker.created_at)
        .where(Worker.state.in_((WorkerState.REQUESTED, WorkerState.BOOTING)))
    ).all()
    return WaitSnapshot(
        now=now or db_now(conn), position=position, queued=queued, provisioning_at=ex.provisioning_at,
        dispatched_to=ex.dispatched_to,
        workers=tuple(PendingWorker(r.id, WorkerState(r.state), r.created_at) for r in pending if r.created_at),
        boot_seconds=boot_estimate(conn), fleet_error=fleet_error(conn),
        tenant_limit=tenant_limit, tenant_busy=tenant_busy,
    )


def waiting_of(engine: Engine, ex, default_running_limit: int = 0) -> Waiting | None:
    """What a queued run waits for; None for a run that is not queued. `default_running_limit` is
    the settings' limit of concurrent runs per tenant (0: none)."""
    if ex.status != ExecutionStatus.QUEUED or ex.queued_at is None:
        return None
    with engine.connect() as conn:
        return waiting(wait_snapshot(conn, ex, default_running_limit=default_running_limit))

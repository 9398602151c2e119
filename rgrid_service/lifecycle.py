"""Execution state transitions, each one a single conditional write.

The claim increments `attempt`, which then acts as a fencing token: every later write of that run
carries `attempt = :a AND status = 'running'`, so a run that was canceled or re-queued behind its
back can no longer touch the execution (zero rows updated means "you are fenced off").
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from .db.models import (
    CANCELED,
    QUEUED,
    RUNNING,
    UPLOADING,
    Execution,
    ExecutionAttempt,
    ExecutionOutput,
    LogChunk,
)


@dataclass(frozen=True)
class Lease:
    execution_id: str
    attempt: int
    worker_id: str


def db_now(conn: Connection) -> datetime:
    """The database clock: every lease and heartbeat comparison uses it, never the local one."""
    value = conn.execute(select(func.now())).scalar_one()
    if isinstance(value, str):  # SQLite without type hints on a bare select
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def _fence(lease: Lease):
    return (
        Execution.id == lease.execution_id,
        Execution.attempt == lease.attempt,
        Execution.status == RUNNING,
    )


def claim(engine: Engine, execution_id: str, worker_id: str) -> Lease | None:
    """Atomically take a queued execution. None means somebody else has it (or it was canceled)."""
    with engine.begin() as conn:
        row = conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == QUEUED)
            .values(
                status=RUNNING,
                attempt=Execution.attempt + 1,
                worker_id=worker_id,
                started_at=func.now(),
                heartbeat_at=func.now(),
                finished_at=None,
                exit_code=None,
                log_bytes=0,
                log_truncated=False,
            )
            .returning(Execution.attempt)
        ).first()
        if row is None:
            return None
        conn.execute(
            insert(ExecutionAttempt).values(execution_id=execution_id, attempt=row.attempt, worker_id=worker_id)
        )
    return Lease(execution_id, row.attempt, worker_id)


def renew(
    engine: Engine,
    lease: Lease,
    chunks: list[tuple[str, bytes]] = (),
    truncated: bool = False,
) -> bool:
    """Heartbeat the run and append log chunks, only while the lease holds. False = fenced off."""
    added = sum(len(data) for stream, data in chunks if stream != "system")
    with engine.begin() as conn:
        values = dict(heartbeat_at=func.now(), log_bytes=Execution.log_bytes + added)
        if truncated:
            values["log_truncated"] = True
        res = conn.execute(update(Execution).where(*_fence(lease)).values(**values))
        if res.rowcount != 1:
            return False
        if chunks:
            conn.execute(
                insert(LogChunk),
                [
                    dict(execution_id=lease.execution_id, attempt=lease.attempt, stream=s, data=d)
                    for s, d in chunks
                ],
            )
    return True


def finish(
    engine: Engine,
    lease: Lease,
    status: str,
    exit_code: int | None,
    reason: str | None,
    outputs: list[dict],
) -> bool:
    """Commit the run's result and its outputs in one transaction, only while the lease holds."""
    with engine.begin() as conn:
        res = conn.execute(
            update(Execution)
            .where(*_fence(lease))
            .values(status=status, exit_code=exit_code, reason=reason, finished_at=func.now())
        )
        if res.rowcount != 1:
            return False
        if outputs:
            conn.execute(
                insert(ExecutionOutput),
                [dict(execution_id=lease.execution_id, attempt=lease.attempt, **o) for o in outputs],
            )
        conn.execute(
            update(ExecutionAttempt)
            .where(ExecutionAttempt.execution_id == lease.execution_id, ExecutionAttempt.attempt == lease.attempt)
            .values(finished_at=func.now(), outcome=status, reason=reason)
        )
    return True


def submit(engine: Engine, execution_id: str) -> bool:
    """uploading -> queued, once every input has been verified by the caller."""
    with engine.begin() as conn:
        res = conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == UPLOADING)
            .values(status=QUEUED, queued_at=func.now())
        )
        return res.rowcount == 1


def cancel(engine: Engine, execution_id: str, reason: str = "canceled by the user") -> bool:
    """Cancel whatever is not finished yet; a running attempt learns it at its next renew()."""
    with engine.begin() as conn:
        row = conn.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status.in_((UPLOADING, QUEUED, RUNNING)))
            .values(status=CANCELED, reason=reason, finished_at=func.now())
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
            .values(finished_at=func.now(), outcome=CANCELED, reason=reason)
        )
    return True


def mark_dispatched(engine: Engine, execution_ids: list[str]) -> None:
    if not execution_ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(Execution)
            .where(Execution.id.in_(execution_ids), Execution.status == QUEUED)
            .values(dispatched_at=func.now())
        )

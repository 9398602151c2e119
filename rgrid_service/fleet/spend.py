"""What pricing reads from the database: workers with their prices, and the attempts on them as
spans (policies/costs prices them). The orchestrator's cost recorder and the API's fleet costs
both read through here, so both see the same workers at the same prices."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from ..db.models import ExecutionAttempt, Worker
from ..policies.costs import LOCAL_PROVIDER, PricedWorker, Span, price_of
from .prices import PriceTable

WORKER_COLUMNS = (Worker.id, Worker.provider, Worker.server_type, Worker.server_id, Worker.slots,
                  Worker.created_at, Worker.deleted_at)


def priced(row, prices: PriceTable) -> PricedWorker:
    """A worker row (WORKER_COLUMNS) with its price, or None and why."""
    hourly, why = price_of(row.provider, row.server_type, row.server_id is not None, prices)
    return PricedWorker(row.id, row.created_at, max(1, row.slots or 1), hourly, why, row.deleted_at)


def workers_by_id(conn: Connection, ids: set[str], prices: PriceTable) -> dict[str, PricedWorker]:
    if not ids:
        return {}
    rows = conn.execute(select(*WORKER_COLUMNS).where(Worker.id.in_(sorted(ids)))).all()
    return {r.id: priced(r, prices) for r in rows}


def workers_billed_since(conn: Connection, since: datetime, period: timedelta,
                         prices: PriceTable) -> list[PricedWorker]:
    """Priced workers that may have a paid hour starting at or after since: made before now and
    not deleted before since. The workers table holds one row per server ever
    made (thousands, not millions), and the local ones are left out in SQL."""
    rows = conn.execute(
        select(*WORKER_COLUMNS).where(
            Worker.provider != LOCAL_PROVIDER, Worker.server_id.is_not(None),
            or_(Worker.deleted_at.is_(None), Worker.deleted_at > since))
    ).all()
    return [w for w in (priced(r, prices) for r in rows) if w.hourly_eur is not None]


def spans_since(conn: Connection, since: datetime, worker_ids: set[str]) -> list[Span]:
    """Attempts on these workers that ended at or after since, or still run: two index-backed
    reads of execution_attempts.finished_at (the running ones have none)."""
    if not worker_ids:
        return []
    cols = (ExecutionAttempt.worker_id, ExecutionAttempt.started_at, ExecutionAttempt.finished_at)
    ids = sorted(worker_ids)
    ended = conn.execute(select(*cols).where(ExecutionAttempt.finished_at >= since,
                                             ExecutionAttempt.worker_id.in_(ids))).all()
    running = conn.execute(select(*cols).where(ExecutionAttempt.finished_at.is_(None),
                                               ExecutionAttempt.worker_id.in_(ids))).all()
    return [Span(r.worker_id, r.started_at, r.finished_at) for r in (*ended, *running)]

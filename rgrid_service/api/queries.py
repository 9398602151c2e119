"""What the API reads: one tenant's executions, their attempts, logs and outputs, batch counts,
and the workers. Every execution query filters by tenant."""
from __future__ import annotations

import base64
import re

from sqlalchemy import Integer, Select, bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rgrid_core.states import TERMINAL, WorkerState

from ..db.models import Execution, ExecutionAttempt, ExecutionOutput, FleetEvent, LogChunk, Worker, WorkerHeartbeat
from ..storage import ObjectStore
from . import schemas
from .errors import Invalid, NotFound

LOG_PAGE_BYTES = 4 * 1024 * 1024


def owned(engine: Engine, tenant_id: str, execution_id: str) -> Execution:
    """The tenant's execution; NotFound for a missing one and for another tenant's alike."""
    with Session(engine) as session:
        ex = session.scalars(
            select(Execution).where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
        ).first()
    if ex is None:
        raise NotFound(f"No execution {execution_id!r} for this API key. `rgrid list` shows yours.")
    return ex


# The reads every follower repeats (a run's view, its log page) are Core rows read on one
# connection, not ORM objects in a Session of their own per query: the Session's bookkeeping,
# and a connection (with its BEGIN) per query, cost more than the reads themselves.
_OWNED = select(Execution.__table__).where(Execution.id == bindparam("eid"), Execution.tenant_id == bindparam("tid"))
_ATTEMPTS = (select(ExecutionAttempt.__table__).where(ExecutionAttempt.execution_id == bindparam("eid"))
             .order_by(ExecutionAttempt.attempt))


def attempts(engine: Engine, execution_id: str) -> list:
    with engine.connect() as conn:
        return attempts_in(conn, execution_id)


def owned_row(conn, tenant_id: str, execution_id: str):
    """The tenant's execution as a row; NotFound for a missing one and for another tenant's alike."""
    row = conn.execute(_OWNED, {"eid": execution_id, "tid": tenant_id}).first()
    if row is None:
        raise NotFound(f"No execution {execution_id!r} for this API key. `rgrid list` shows yours.")
    return row


def attempts_in(conn, execution_id: str) -> list:
    return conn.execute(_ATTEMPTS, {"eid": execution_id}).all()


# A page's cursor: the seq of its last (oldest) row, in decimal. Clients keep it as given; any
# such number is a valid place to go on from, so the OpenAPI's pattern describes every good one.
CURSOR_PATTERN = r"^[0-9]{1,18}$"


def cursor_after(ex: Execution) -> str:
    """The cursor a client passes back to list what comes after `ex` (older ones)."""
    return str(ex.seq)


def seq_of_cursor(cursor: str) -> int:
    """The seq a cursor holds; Invalid (400, a sentence) for a string this API does not give out."""
    if re.fullmatch(CURSOR_PATTERN, cursor):
        return int(cursor)
    raise Invalid(f"The cursor {cursor[:40]!r} is not one this API gives out. Pass the X-Next-Cursor header of the "
                  "previous page as it came, or leave cursor out to start from the newest.")


def list_statement(tenant_id: str, status: str | None, batch: str | None, limit: int,
                   before_seq: int | None = None) -> Select:
    """The listing's query, newest created first, built apart from running it so that the tests
    can EXPLAIN the very statement the API runs. Each shape has its index (migration 0009):
    (tenant_id, seq), (tenant_id, status, seq), (tenant_id, batch_id, seq) and
    (tenant_id, batch_id, status, seq); `before_seq` (a keyset cursor) is a range on the same
    index, so every page costs the same however much history lies behind it."""
    q = select(Execution).where(Execution.tenant_id == tenant_id)
    if status:
        q = q.where(Execution.status == status)
    if batch:
        q = q.where(Execution.batch_id == batch)
    if before_seq is not None:
        q = q.where(Execution.seq < before_seq)
    return q.order_by(Execution.seq.desc()).limit(limit)  # creation order, unique: see Execution.seq


def list_executions(engine: Engine, tenant_id: str, status: str | None, batch: str | None,
                    limit: int, cursor: str | None = None) -> tuple[list[Execution], str | None]:
    """A page of the tenant's executions, newest created first, optionally of one status or
    batch, after `cursor`; and the cursor of the next page (None: this page is the last)."""
    before = None if cursor is None else seq_of_cursor(cursor)
    with Session(engine) as session:
        rows = list(session.scalars(list_statement(tenant_id, status, batch, limit + 1, before)).all())
    page = rows[:limit]
    return page, (cursor_after(page[-1]) if len(rows) > limit else None)


def batch_totals_statement(tenant_id: str, batch_id: str) -> Select:
    """A batch's runs counted and priced per status: a range of (tenant_id, batch_id, status, seq),
    as large as the batch, never the tenant's history."""
    return (select(Execution.status, func.count(), func.sum(Execution.cost_eur))
            .where(Execution.tenant_id == tenant_id, Execution.batch_id == batch_id)
            .group_by(Execution.status))


def batch_totals(engine: Engine, tenant_id: str, batch_id: str) -> tuple[dict[str, int], float | None]:
    """A batch's executions counted per status (empty: the tenant has no such batch), and what
    they cost so far (None: none priced yet)."""
    with engine.connect() as conn:
        rows = conn.execute(batch_totals_statement(tenant_id, batch_id)).all()
    costs = [c for _, _, c in rows if c is not None]
    return {st: n for st, n, _ in rows}, (sum(costs) if costs else None)


def no_batch(batch_id: str) -> NotFound:
    return NotFound(f"No executions in batch {batch_id!r} for this API key. `rgrid list` shows yours.")


def batch_view(engine: Engine, tenant_id: str, batch_id: str) -> schemas.BatchView:
    """One small query however large the batch, for progress displays that poll (listing a
    10 000-run batch twice a second would not be)."""
    counts, cost = batch_totals(engine, tenant_id, batch_id)
    if not counts:
        raise no_batch(batch_id)
    return schemas.BatchView(**summary(batch_id, counts, cost))


def summary(batch_id: str, counts: dict[str, int], cost_eur: float | None = None) -> dict:
    total = sum(counts.values())
    return dict(batch_id=batch_id, total=total, counts=counts, cost_eur=cost_eur,
                finished=sum(n for st, n in counts.items() if st in TERMINAL) == total)


_STATUS = select(Execution.id, Execution.status).where(Execution.id == bindparam("eid"),
                                                        Execution.tenant_id == bindparam("tid"))
_LOG_PAGE = (select(LogChunk.id, LogChunk.attempt, LogChunk.stream, LogChunk.data)
             .where(LogChunk.execution_id == bindparam("eid"), LogChunk.id > bindparam("after"))
             .order_by(LogChunk.id).limit(bindparam("limit", type_=Integer)))


def owned_log_page(engine: Engine, tenant_id: str, execution_id: str, after: int, limit: int) -> schemas.LogPage:
    """log_page of the tenant's execution, read on one connection (NotFound as owned())."""
    with engine.connect() as conn:
        ex = conn.execute(_STATUS, {"eid": execution_id, "tid": tenant_id}).first()
        if ex is None:
            raise NotFound(f"No execution {execution_id!r} for this API key. `rgrid list` shows yours.")
        return log_page_in(conn, ex, after, limit)


def log_page_statement(execution_id: str, after: int, limit: int) -> Select:
    """One run's chunks after the cursor in arrival order (a range of (execution_id, id)): the
    statement log pages run, with these values bound (the plan tests EXPLAIN it)."""
    return _LOG_PAGE.params(eid=execution_id, after=after, limit=limit)


def log_page_in(conn, ex, after: int, limit: int) -> schemas.LogPage:
    """Chunks after the cursor, up to `limit` chunks and about LOG_PAGE_BYTES, read on an open
    connection; `ex` needs its id and status (a row will do)."""
    rows = conn.execute(_LOG_PAGE, {"eid": ex.id, "after": after, "limit": limit}).all()
    chunks, size, next_after = [], 0, after
    for r in rows:
        if chunks and size + len(r.data) > LOG_PAGE_BYTES:
            break
        chunks.append(schemas.LogChunkView(id=r.id, attempt=r.attempt, stream=r.stream,
                                           data_b64=base64.b64encode(r.data).decode()))
        size += len(r.data)
        next_after = r.id
    # Finished only once the terminal status is seen *and* this page drained the log.
    finished = ex.status in TERMINAL and len(chunks) == len(rows) and len(rows) < limit
    return schemas.LogPage(chunks=chunks, next_after=next_after, status=ex.status, finished=finished)


def outputs(engine: Engine, store: ObjectStore, execution_id: str) -> list[schemas.OutputView]:
    """The committed outputs with a presigned GET URL each."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ExecutionOutput.path, ExecutionOutput.size, ExecutionOutput.sha256, ExecutionOutput.object_key)
            .where(ExecutionOutput.execution_id == execution_id)
            .order_by(ExecutionOutput.path)
        ).all()
    return [schemas.OutputView(path=r.path, size=r.size, sha256=r.sha256, url=store.presign_get(r.object_key))
            for r in rows]


def workers(engine: Engine) -> list[schemas.WorkerView]:
    """Every worker that is not deleted, with its last heartbeat and what it reported running."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Worker.id, Worker.provider, Worker.state, Worker.slots, Worker.created_at,
                   Worker.dead_reason, WorkerHeartbeat.last_heartbeat_at, WorkerHeartbeat.running,
                   Worker.server_type, Worker.location, Worker.server_id)
            .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
            .where(Worker.state != WorkerState.DELETED)
            .order_by(Worker.created_at, Worker.id)
        ).all()
    return [schemas.WorkerView(id=r.id, provider=r.provider, state=r.state, slots=r.slots,
                               created_at=r.created_at, last_heartbeat_at=r.last_heartbeat_at,
                               running=r.running or [], dead_reason=r.dead_reason, server_type=r.server_type,
                               location=r.location, server_id=r.server_id) for r in rows]


def fleet_events(engine: Engine, limit: int = 10) -> list[schemas.FleetEventView]:
    """The fleet's latest decisions, updates and errors, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(FleetEvent.__table__).order_by(FleetEvent.id.desc()).limit(limit)).mappings().all()
    return [schemas.FleetEventView.model_validate(dict(r)) for r in rows]


def unpriced_workers(engine: Engine, prices, worker_ids: set[str]) -> dict[str, str]:
    """worker id -> why it has no price, for those of these workers without one (asked only for
    runs that cost 0, so most reads of a run add no query)."""
    from ..fleet.spend import workers_by_id

    wanted = {w for w in worker_ids if w}
    if not wanted:
        return {}
    with engine.connect() as conn:
        found = workers_by_id(conn, wanted, prices)
    return {w: p.why for w, p in found.items() if p.hourly_eur is None}

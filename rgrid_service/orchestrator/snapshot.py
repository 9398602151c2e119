"""What the orchestrator knows at one tick, read in one place and handed to the policies frozen.

Each tick reads a snapshot (database and Ray), asks a pure policy (rgrid_service.policies), and
acts on the decision. Nothing here decides anything.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, or_, select
from sqlalchemy.engine import Connection

from rgrid_core.constants import SLOT_RESOURCE, WORKER_LABEL
from rgrid_core.states import LIVE_WORKER_STATES, ExecutionStatus, WorkerState

from .. import lifecycle
from ..db.models import Execution, Worker, WorkerHeartbeat
from ..policies.health import WorkerBeat
from ..policies.placement import Queued, Waiting, WorkerLoad
from ..policies.provisioning import FleetSnapshot, FleetWorker, RunningRun

QUEUED, RUNNING = ExecutionStatus.QUEUED, ExecutionStatus.RUNNING


@dataclass(frozen=True)
class RayNode:
    node_id: str
    alive: bool
    slots: int


def ray_worker_nodes() -> dict[str, RayNode]:
    """worker id -> its Ray node, for every node that carries the worker label."""
    import ray

    nodes: dict[str, RayNode] = {}
    for node in ray.nodes():
        worker_id = (node.get("Labels") or {}).get(WORKER_LABEL)
        if not worker_id:
            continue
        info = RayNode(node["NodeID"], bool(node["Alive"]), int(node.get("Resources", {}).get(SLOT_RESOURCE, 0)))
        # A worker id may appear twice (a dead node and its restarted self): alive wins.
        if worker_id not in nodes or info.alive:
            nodes[worker_id] = info
    return nodes


@dataclass(frozen=True)
class DispatchSnapshot:
    now: datetime
    workers: tuple[WorkerLoad, ...]  # active workers with a live Ray node
    queued: tuple[Queued, ...]  # never dispatched, or dispatched too long ago
    waiting: tuple[Waiting, ...]  # handed ahead to a worker whose slots are all running
    batch_busy: dict[str, int]  # batch id -> its runs running or dispatched
    tenant_busy: dict[str, int] | None = None  # tenant id -> its runs running or dispatched (tenants with a limit)
    tenant_limit: dict[str, int] | None = None  # tenant id -> its limit of concurrent runs (tenants with one)
    # Runs handed ahead to a worker and not claimed yet: each may become `waiting` (and move to a
    # free slot) once it is a dispatch interval old, with nothing to ring meanwhile.
    handed_ahead: int = 0


# A dispatch tick's common statements, built once with bound parameters (building them on every
# tick was about a third of the snapshot's time, which sits between a run's queueing and its start).
_STALE = bindparam("stale", type_=Execution.__table__.c.dispatched_at.type)
_PENDING = and_(Execution.status == QUEUED, Execution.dispatched_at >= _STALE)  # handed ahead, not claimed yet
_HOLDER = case((Execution.status == RUNNING, Execution.worker_id), else_=Execution.dispatched_to)
ACTIVE_WORKERS = select(Worker.id).where(Worker.state == WorkerState.ACTIVE)
BUSY_PER_WORKER = select(_HOLDER, func.count()).where(or_(Execution.status == RUNNING, _PENDING)).group_by(_HOLDER)
RECENT_PER_WORKER = (select(Execution.dispatched_to, func.count())
                     .where(Execution.dispatched_at >= bindparam("window", type_=Execution.__table__.c.dispatched_at.type))
                     .group_by(Execution.dispatched_to))
TO_PLACE = (select(Execution.id, Execution.batch_id, Execution.batch_parallel, Execution.tenant_id)
            .where(Execution.status == QUEUED, or_(Execution.dispatched_at.is_(None), Execution.dispatched_at < _STALE))
            .order_by(Execution.queued_at, Execution.id))
HANDED_AHEAD = select(func.count()).where(_PENDING)
RUNNING_PER_WORKER = select(Execution.worker_id, func.count()).where(Execution.status == RUNNING).group_by(Execution.worker_id)


def dispatch_snapshot(conn: Connection, nodes: dict[str, RayNode], redispatch_after: float,
                      placement_window: float, prefetch: int, dispatch_interval: float,
                      default_running_limit: int = 0) -> DispatchSnapshot | None:
    """Everything placement needs; None when no worker has room, so nothing else is read. Runs of a
    tenant at its limit of concurrent runs are not read at all, so they never fill the window of
    queued runs read ahead of other tenants'."""
    now = lifecycle.db_now(conn)
    stale = now - timedelta(seconds=redispatch_after)
    window = now - timedelta(seconds=placement_window)
    active = conn.execute(ACTIVE_WORKERS).scalars().all()
    pending = and_(Execution.status == QUEUED, Execution.dispatched_at >= stale)  # for the rarer reads below
    busy = dict(conn.execute(BUSY_PER_WORKER, {"stale": stale}).all())
    recent = dict(conn.execute(RECENT_PER_WORKER, {"window": window}).all())
    workers = tuple(
        WorkerLoad(w, nodes[w].slots, busy.get(w, 0), recent.get(w, 0))
        for w in active if w in nodes and nodes[w].alive and nodes[w].slots > 0
    )
    free = sum(max(0, w.slots + prefetch - w.busy) for w in workers)
    if free <= 0:
        return None
    waiting = _waiting(conn, now, stale, workers, dispatch_interval)
    tenant_limit, tenant_busy = tenant_limits(conn, pending, default_running_limit)
    blocked = [t for t, n in tenant_limit.items() if tenant_busy.get(t, 0) >= n]
    to_place = TO_PLACE.where(Execution.tenant_id.not_in(blocked)) if blocked else TO_PLACE
    queued = conn.execute(to_place.limit(free * 20), {"stale": stale}).all()
    batches = {q.batch_id for q in queued if q.batch_id and q.batch_parallel}
    batch_busy = dict(conn.execute(
        select(Execution.batch_id, func.count())
        .where(Execution.batch_id.in_(batches), or_(Execution.status == RUNNING, pending))
        .group_by(Execution.batch_id)
    ).all()) if batches else {}
    handed_ahead = conn.execute(HANDED_AHEAD, {"stale": stale}).scalar_one()
    return DispatchSnapshot(now, workers, tuple(Queued(q.id, q.batch_id, q.batch_parallel, q.tenant_id) for q in queued),
                            waiting, batch_busy, tenant_busy, tenant_limit, handed_ahead)


def held_back(conn: Connection, default_running_limit: int) -> int:
    """Queued runs that wait for their tenant's limit of concurrent runs, not for a worker."""
    placed = and_(Execution.status == QUEUED, Execution.dispatched_to.is_not(None))
    limits, busy = tenant_limits(conn, placed, default_running_limit)
    if not limits:
        return 0
    waiting = dict(conn.execute(
        select(Execution.tenant_id, func.count())
        .where(Execution.status == QUEUED, Execution.dispatched_to.is_(None), Execution.tenant_id.in_(list(limits)))
        .group_by(Execution.tenant_id)
    ).all())
    return sum(max(0, n - max(0, limits[t] - busy.get(t, 0))) for t, n in waiting.items())


def tenant_limits(conn: Connection, pending, default: int) -> tuple[dict[str, int], dict[str, int]]:
    """(tenant -> its limit of concurrent runs, tenant -> its runs running or placed) for the
    tenants with queued runs and a limit (their own in tenant_quotas, else `default`; 0: none)."""
    from ..db.models import TenantQuota
    from ..policies.quotas import effective

    own = dict(conn.execute(select(TenantQuota.tenant_id, TenantQuota.max_running_runs)
                            .where(TenantQuota.max_running_runs.is_not(None))).all())
    if not (default and default > 0) and not any(n > 0 for n in own.values()):
        return {}, {}  # no limit anywhere (the usual case): nothing more to read on this tick
    queued = select(Execution.tenant_id).where(Execution.status == QUEUED)
    if not (default and default > 0):
        queued = queued.where(Execution.tenant_id.in_([t for t, n in own.items() if n > 0]))
    tenants = conn.execute(queued.distinct()).scalars().all()
    limits = {t: n for t in tenants if (n := effective(default, own.get(t))) is not None}
    if not limits:
        return {}, {}
    # status IN (running, queued) restates what the OR implies: with it both databases read the
    # tenants' live runs through ix_executions_tenant_status_seq, not each tenant's whole history.
    busy = dict(conn.execute(
        select(Execution.tenant_id, func.count())
        .where(Execution.tenant_id.in_(list(limits)), Execution.status.in_((RUNNING, QUEUED)),
               or_(Execution.status == RUNNING, pending))
        .group_by(Execution.tenant_id)
    ).all())
    return limits, busy


def _waiting(conn: Connection, now: datetime, stale: datetime, workers: tuple[WorkerLoad, ...],
             dispatch_interval: float) -> tuple[Waiting, ...]:
    """Runs handed ahead more than a dispatch interval ago to a worker whose slots are all
    running something: candidates to move to a free slot elsewhere (policies.placement.steal)."""
    if not any(w.busy < w.slots for w in workers):
        return ()  # no free slot anywhere: nothing could move
    slots = {w.worker_id: w.slots for w in workers}
    running = dict(conn.execute(RUNNING_PER_WORKER).all())
    full = [w for w, n in slots.items() if running.get(w, 0) >= n]
    if not full:
        return ()
    ahead_since = now - timedelta(seconds=dispatch_interval)
    rows = conn.execute(
        select(Execution.id, Execution.dispatched_to)
        .where(Execution.status == QUEUED, Execution.dispatched_to.in_(full),
               Execution.dispatched_at >= stale, Execution.dispatched_at < ahead_since)
        .order_by(Execution.queued_at, Execution.id)
    ).all()
    return tuple(Waiting(r.id, r.dispatched_to) for r in rows)


def health_snapshot(conn: Connection, nodes: dict[str, RayNode]) -> tuple[datetime, tuple[WorkerBeat, ...]]:
    """The database's now and the heartbeat of every active or draining worker."""
    now = lifecycle.db_now(conn)
    rows = conn.execute(
        select(Worker.id, Worker.created_at, WorkerHeartbeat.last_heartbeat_at)
        .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
        .where(Worker.state.in_((WorkerState.ACTIVE, WorkerState.DRAINING)))
    ).all()
    return now, tuple(WorkerBeat(r.id, r.last_heartbeat_at, r.created_at,
                                 nodes[r.id].alive if r.id in nodes else None) for r in rows)


# A running run's duration is estimated from finished runs of the same script among the newest
# HISTORY_WINDOW executions (a bounded read whatever the history holds), the last HISTORY of them.
HISTORY_WINDOW = 5000
HISTORY = 20


def fleet_snapshot(conn: Connection, provider: str, default_running_limit: int = 0) -> FleetSnapshot:
    """The queue, the running runs with their expected durations, and the live workers. Queued runs
    held back by their tenant's limit of concurrent runs are not counted: no worker is asked for
    them."""
    now = lifecycle.db_now(conn)
    queued = conn.execute(select(func.count()).where(Execution.status == QUEUED)).scalar_one()
    queued -= held_back(conn, default_running_limit)
    running_rows = conn.execute(
        select(Execution.tenant_id, Execution.script, Execution.started_at).where(Execution.status == RUNNING)
    ).all()
    expected = _expected_durations(conn, {(r.tenant_id, r.script) for r in running_rows})
    running = tuple(RunningRun(r.started_at, expected.get((r.tenant_id, r.script))) for r in running_rows)
    pending = and_(Execution.status == QUEUED, Execution.dispatched_to.is_not(None))
    holder = case((Execution.status == RUNNING, Execution.worker_id), else_=Execution.dispatched_to)
    assigned = dict(conn.execute(
        select(holder, func.count()).where(or_(Execution.status == RUNNING, pending)).group_by(holder)
    ).all())
    on_worker = dict(conn.execute(
        select(Execution.worker_id, func.count()).where(Execution.status == RUNNING).group_by(Execution.worker_id)
    ).all())
    rows = conn.execute(
        select(Worker.id, Worker.state, Worker.slots, Worker.created_at, Worker.retire_requested_at)
        .where(Worker.provider == provider, Worker.state.in_([s.value for s in LIVE_WORKER_STATES]))
        .order_by(Worker.created_at, Worker.id)
    ).all()
    workers = tuple(FleetWorker(r.id, WorkerState(r.state), r.slots, on_worker.get(r.id, 0),
                                assigned.get(r.id, 0), r.created_at, r.retire_requested_at is not None)
                    for r in rows)
    return FleetSnapshot(now, queued, running, workers)


def _expected_durations(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(tenant, script) -> median duration of its last finished runs, where there are any."""
    if not keys:
        return {}
    newest = conn.execute(select(func.max(Execution.seq))).scalar() or 0
    rows = conn.execute(
        select(Execution.tenant_id, Execution.script, Execution.started_at, Execution.finished_at)
        .where(Execution.seq > newest - HISTORY_WINDOW, Execution.status == ExecutionStatus.SUCCEEDED,
               Execution.started_at.is_not(None), Execution.finished_at.is_not(None))
        .order_by(Execution.seq.desc())
    ).all()
    durations: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        key = (r.tenant_id, r.script)
        if key in keys and len(durations.setdefault(key, [])) < HISTORY:
            durations[key].append((r.finished_at - r.started_at).total_seconds())
    return {key: statistics.median(d) for key, d in durations.items() if d}

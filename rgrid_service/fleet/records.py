"""The worker records: the fleet's desired state, written before any server is created.

Every state change goes through `move()`, guarded by the transition table in rgrid_core.states,
so a record never jumps (a dead worker never becomes active again).
"""
from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from rgrid_core.states import LIVE_WORKER_STATES, ExecutionStatus, WorkerState, sources_of

from ..db.clock import utcnow
from ..db.models import Execution, Worker
from ..db.session import write_tx
from ..lifecycle import GIVEN_UP, token_revoked
from . import Server, ServerSpec


def request_workers(engine: Engine, n: int, provider: str, server_type: str, location: str,
                    slots: int) -> list[str]:
    """Write n new worker records in state `requested`, with ids w-<n> never used before in this
    database (a dead worker's id stays dead); returns their ids. The queued runs never dispatched
    get their `provisioning_at` (a stage of their timeline), once."""
    with write_tx(engine) as conn:
        ids = next_worker_ids(conn, n)
        for worker_id in ids:
            conn.execute(insert(Worker).values(
                id=worker_id, provider=provider, state=WorkerState.REQUESTED, server_type=server_type,
                location=location, slots=slots, created_at=utcnow()))
        conn.execute(update(Execution).where(Execution.status == ExecutionStatus.QUEUED, Execution.dispatched_at.is_(None),
                                             Execution.provisioning_at.is_(None)).values(provisioning_at=utcnow()))
    return ids


def next_worker_ids(conn, n: int) -> list[str]:
    """The ids the next n workers get: w-<n> past every id this database has held."""
    known = conn.execute(select(Worker.id)).scalars().all()
    top = max((int(k[2:]) for k in known if k.startswith("w-") and k[2:].isdigit()), default=0)
    return [f"w-{top + i}" for i in range(1, n + 1)]


def move(engine: Engine, worker_ids: list[str], to: WorkerState, **values) -> list[str]:
    """Move these workers to state `to` where the transition table allows it; returns the ids moved.
    A worker retired by hand never becomes active again (an operator's retire may land between a
    plan that kept the worker and this write)."""
    if not worker_ids:
        return []
    guard = [Worker.retire_requested_at.is_(None)] if to == WorkerState.ACTIVE else []
    if to in GIVEN_UP:
        values = {**token_revoked(), **values}
    with write_tx(engine) as conn:
        moved = conn.execute(
            update(Worker)
            .where(Worker.id.in_(worker_ids), Worker.state.in_(sources_of(to)), *guard)
            .values(state=to, **values)
            .returning(Worker.id)
        ).scalars().all()
    return list(moved)


def desired_servers(engine: Engine, provider: str, image: str = "debian-12") -> list[ServerSpec]:
    """The servers that should exist: every live worker record of this provider, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Worker.id, Worker.server_type, Worker.location)
            .where(Worker.provider == provider, Worker.state.in_([s.value for s in LIVE_WORKER_STATES]))
            .order_by(Worker.created_at, Worker.id)
        ).all()
    return [ServerSpec(r.id, r.server_type or "", r.location or "", image) for r in rows]


def retire_idle(engine: Engine, worker_ids: list[str]) -> list[str]:
    """Draining workers that are still idle (nothing running on them, nothing dispatched to them)
    move to `deleting`, in one guarded write, and leave the desired set; returns those moved."""
    from rgrid_core.states import ExecutionStatus

    from ..db.models import Execution
    from ..lifecycle import release_placements

    if not worker_ids:
        return []
    busy = select(Execution.id).where(
        ((Execution.worker_id == Worker.id) & (Execution.status == ExecutionStatus.RUNNING))
        | ((Execution.dispatched_to == Worker.id) & (Execution.status == ExecutionStatus.QUEUED))
    ).exists()
    with write_tx(engine) as conn:
        moved = conn.execute(
            update(Worker)
            .where(Worker.id.in_(worker_ids), Worker.state == WorkerState.DRAINING, ~busy)
            .values(state=WorkerState.DELETING, **token_revoked())
            .returning(Worker.id)
        ).scalars().all()
        release_placements(conn, list(moved))
    return list(moved)


def record_servers(engine: Engine, provider: str, servers: list[Server]) -> dict[str, list[str]]:
    """Bring the records in line with the servers that exist after an update: a requested worker
    with a server is booting (its server id kept); a deleting worker without one is deleted; a dead
    one without one gets its deletion time. Returns the ids per change."""
    have = {s.worker_id: s.server_id for s in servers}
    changed: dict[str, list[str]] = {"booting": [], "deleted": []}
    with write_tx(engine) as conn:
        rows = conn.execute(
            select(Worker.id, Worker.state, Worker.server_id, Worker.deleted_at).where(Worker.provider == provider,
                                                                                     Worker.deleted_at.is_(None))
        ).all()
        now = utcnow()
        for r in rows:
            if r.id in have and r.server_id != have[r.id]:
                conn.execute(update(Worker).where(Worker.id == r.id).values(server_id=have[r.id]))
            if r.id in have and r.state == WorkerState.REQUESTED:
                conn.execute(update(Worker).where(Worker.id == r.id, Worker.state == WorkerState.REQUESTED)
                             .values(state=WorkerState.BOOTING))
                changed["booting"].append(r.id)
            elif r.id not in have and r.state in (WorkerState.DELETING, WorkerState.DEAD):
                values = {"deleted_at": now, **token_revoked()}
                if r.state == WorkerState.DELETING:
                    values["state"] = WorkerState.DELETED
                conn.execute(update(Worker).where(Worker.id == r.id).values(**values))
                changed["deleted"].append(r.id)
    return changed


def record_event(engine: Engine, kind: str, message: str, trigger: str | None = None,
                 duration: float | None = None, ok: bool = True, diff: dict | None = None) -> None:
    """One fleet event; an update's diff is {"create": [ids], "delete": [...], "replace": [...]}."""
    from ..db.models import FleetEvent

    with write_tx(engine) as conn:
        conn.execute(insert(FleetEvent).values(at=utcnow(), kind=kind, trigger=trigger, message=message,
                                               duration_seconds=duration, ok=ok, diff=diff))


def retire_by_hand(engine: Engine, worker_id: str) -> str | None:
    """An operator retires a worker: an active or draining one drains (no new runs) and is deleted
    once idle; one not yet booted leaves the desired set at once. Returns its state afterwards,
    None when no such worker exists."""
    with write_tx(engine) as conn:
        state = conn.execute(select(Worker.state).where(Worker.id == worker_id)).scalar()
        if state is None:
            return None
        if state in (WorkerState.ACTIVE, WorkerState.DRAINING):
            conn.execute(update(Worker).where(Worker.id == worker_id, Worker.state == state)
                         .values(state=WorkerState.DRAINING, retire_requested_at=utcnow()))
            return WorkerState.DRAINING
        if state in (WorkerState.REQUESTED, WorkerState.BOOTING):
            conn.execute(update(Worker).where(Worker.id == worker_id, Worker.state == state)
                         .values(state=WorkerState.DELETING, retire_requested_at=utcnow(), **token_revoked()))
            return WorkerState.DELETING
        return state


def retired_by_hand(engine: Engine, worker_ids) -> list[str]:
    """Which of these workers an operator retired."""
    with engine.connect() as conn:
        return list(conn.execute(select(Worker.id).where(Worker.id.in_(list(worker_ids)),
                                                         Worker.retire_requested_at.is_not(None))).scalars())


def record_ray_nodes(engine: Engine, nodes: dict[str, str]) -> list[str]:
    """Keep each worker's Ray node id as the orchestrator last saw it (worker id -> node id);
    writes only the records whose node changed. Returns their ids."""
    if not nodes:
        return []
    with engine.connect() as conn:
        known = dict(conn.execute(select(Worker.id, Worker.ray_node_id).where(Worker.id.in_(list(nodes)))).all())
    changed = [w for w, node in nodes.items() if w in known and known[w] != node]
    if changed:
        with write_tx(engine) as conn:
            for worker_id in changed:
                conn.execute(update(Worker).where(Worker.id == worker_id).values(ray_node_id=nodes[worker_id]))
    return changed

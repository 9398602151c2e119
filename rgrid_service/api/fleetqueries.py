"""What operators read and do through the API: the workers, the fleet's preview, the history of
its updates, retiring a worker by hand. Reads the database (and, for a preview, the provider's
engine); never Ray."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rgrid_core.states import ExecutionStatus, WorkerState

from .. import lifecycle
from ..db.models import Execution, FleetEvent, Worker, WorkerHeartbeat
from ..fleet import FleetBusy, FleetProvider, explain, records
from ..fleet.pricechange import price_change
from ..fleet.prices import PriceTable
from ..policies.billing import until_boundary
from ..settings import ServiceSettings
from . import schemas
from .errors import Conflict, NotFound, ProviderFailed

FLEET_BUSY = "The fleet is being updated; try again in a few seconds."


def workers(engine: Engine, billing_period: float) -> schemas.WorkersView:
    """Every worker that is not deleted: slots used (runs running on it), age and the time left in
    its paid hour by the database's clock, last heartbeat, Ray node."""
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
        used = dict(conn.execute(
            select(Execution.worker_id, func.count()).where(Execution.status == ExecutionStatus.RUNNING)
            .group_by(Execution.worker_id)
        ).all())
        rows = conn.execute(
            select(Worker.__table__, WorkerHeartbeat.last_heartbeat_at)
            .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
            .where(Worker.state != WorkerState.DELETED)
            .order_by(Worker.created_at, Worker.id)
        ).mappings().all()
    period = timedelta(seconds=billing_period)
    return schemas.WorkersView(now=now, workers=[schemas.WorkerInfo(
        id=r["id"], provider=r["provider"], state=r["state"], server_type=r["server_type"], location=r["location"],
        server_id=r["server_id"], slots=r["slots"], slots_used=used.get(r["id"], 0), created_at=r["created_at"],
        age_seconds=round((now - r["created_at"]).total_seconds(), 1),
        paid_hour_left_seconds=None if r["deleted_at"] else round(
            until_boundary(r["created_at"], now, period).total_seconds(), 1),
        last_heartbeat_at=r["last_heartbeat_at"], ray_node_id=r["ray_node_id"], dead_reason=r["dead_reason"],
        retire_requested_at=r["retire_requested_at"]) for r in rows])


def retire(engine: Engine, worker_id: str) -> schemas.Retired:
    state = records.retire_by_hand(engine, worker_id)
    if state is None:
        raise NotFound(f"No worker {worker_id!r}. `rgrid workers` lists them.")
    if state == WorkerState.DRAINING:
        message = (f"{worker_id} is draining: it takes no new runs, and the next fleet update after its runs end "
                   "deletes its server. `rgrid fleet history` shows it.")
    elif state == WorkerState.DELETING:
        message = f"{worker_id} had not booted yet; the next fleet update deletes its server."
    else:
        raise Conflict(f"{worker_id} is {state} already; there is nothing to retire. `rgrid workers` lists the others.")
    return schemas.Retired(id=worker_id, state=state, message=message)


def history(engine: Engine, limit: int, before: int | None) -> schemas.FleetHistory:
    """Fleet updates and failed updates, newest first, a page of `limit` older than event `before`."""
    q = select(FleetEvent.__table__).where(FleetEvent.kind.in_(("update", "error")))
    if before is not None:
        q = q.where(FleetEvent.id < before)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(FleetEvent.id.desc()).limit(limit + 1)).mappings().all()
    page = rows[:limit]
    return schemas.FleetHistory(
        updates=[schemas.FleetUpdateView(id=r["id"], at=r["at"], trigger=r["trigger"], ok=r["ok"], summary=r["message"],
                                         diff=r["diff"], duration_seconds=r["duration_seconds"]) for r in page],
        next_before=page[-1]["id"] if len(rows) > limit else None)


def preview(engine: Engine, settings: ServiceSettings, provider: FleetProvider,
            table: PriceTable) -> schemas.FleetPreviewView:
    """The orchestrator's plan of this moment, not acted on; the engine's diff of the desired set
    it leads to; and what that changes in € per hour and per month."""
    from ..orchestrator.fleet import preview as plan_preview, update_diff

    try:
        seen = plan_preview(engine, settings, provider)
    except FleetBusy as e:
        raise Conflict(FLEET_BUSY) from e
    except Exception as e:  # the engine or the cloud: the same sentence the fleet's updates record
        raise ProviderFailed(f"The fleet could not be previewed. {explain(e, 1)}") from e
    existing = sorted(s.worker_id for s in seen.existing)
    with engine.connect() as conn:
        types = dict(conn.execute(select(Worker.id, Worker.server_type)).all())
    types.update({d.worker_id: d.server_type for d in seen.desired})
    cost = price_change(seen.diff, existing, types, table)
    p = seen.plan
    return schemas.FleetPreviewView(
        at=seen.snapshot.now, provider=provider.name, queued=seen.snapshot.queued, trigger=p.trigger,
        actions=[schemas.PlanAction(kind=a.kind, workers=list(a.workers), reason=a.reason, trigger=a.trigger)
                 for a in p.actions()],
        new_workers=seen.new, desired=[d.worker_id for d in seen.desired], existing=existing,
        diff=update_diff(seen.diff),
        servers=[schemas.ServerChange(**c.__dict__) for c in cost.servers],
        cost=schemas.CostChange(now_hourly_eur=cost.now_hourly_eur, hourly_eur=cost.hourly_eur,
                                monthly_eur=cost.monthly_eur, prices_as_of=list(cost.as_of), missing=list(cost.missing)),
    )

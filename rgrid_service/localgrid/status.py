"""What `rgrid local status` shows: the grid's processes, addresses, workers and the fleet's last
events (a failing fleet update's reason among them)."""
from __future__ import annotations

from pathlib import Path

from rgrid_core.localstate import load_state

from .layout import logs_dir


def grid_status(home: Path) -> dict:
    state = load_state(home)
    if state is None:
        return {"running": False}
    report = {
        "running": all(state.components().values()),
        "components": {name: {"pid": state.pids[name], "alive": ok} for name, ok in state.components().items()},
        "api_url": state.api_url, "ray_address": state.ray_address, "dashboard_url": state.dashboard_url,
        "s3_endpoint": state.s3_endpoint, "database_url": state.database_url, "logs": str(logs_dir(home)),
        "fleet": state.fleet, "workers": [], "fleet_events": [],
        "metrics": {"api": f"{state.api_url}/metrics", "orchestrator": state.orchestrator_metrics_url or None},
    }
    try:
        report["workers"], report["fleet_events"] = _fleet(state.database_url)
    except Exception as e:  # noqa: BLE001 - the database may be away; say so instead
        report["fleet_error"] = f"The database could not be read ({type(e).__name__})."
    return report


def _fleet(database_url: str) -> tuple[list[dict], list[dict]]:
    from sqlalchemy import select

    from rgrid_core.states import WorkerState

    from ..db.models import FleetEvent, Worker, WorkerHeartbeat
    from ..db.session import engine_for

    with engine_for(database_url).connect() as conn:
        workers = conn.execute(
            select(Worker.id, Worker.state, Worker.server_type, Worker.location, Worker.server_id, Worker.slots,
                   Worker.created_at, Worker.dead_reason, WorkerHeartbeat.last_heartbeat_at)
            .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
            .where(Worker.deleted_at.is_(None), Worker.state != WorkerState.DELETED)
            .order_by(Worker.created_at, Worker.id)
        ).mappings().all()
        events = conn.execute(
            select(FleetEvent.at, FleetEvent.kind, FleetEvent.trigger, FleetEvent.message, FleetEvent.ok,
                   FleetEvent.duration_seconds).order_by(FleetEvent.id.desc()).limit(10)
        ).mappings().all()
    return [dict(w) for w in workers], [dict(e) for e in events]

"""The fleet, for operator keys: workers, retiring one by hand, the fleet's preview and history."""
from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Query, Request

from .. import fleetqueries, schemas
from ..costs import PricesDep
from ..deps import EngineDep, OperatorDep, SettingsDep
from ..errors import OPERATOR, NotConfigured, responses

router = APIRouter(tags=["fleet"], responses=responses(*OPERATOR))

_provider_lock = threading.Lock()


def fleet_provider(request: Request):
    """The provider the API's settings name, made once (the local grid gives the API the same fleet
    settings as the orchestrator)."""
    state = request.app.state
    with _provider_lock:
        if getattr(state, "fleet_provider", None) is None:
            from ...fleet import make_provider

            try:
                state.fleet_provider = make_provider(state.settings)
            except RuntimeError as e:
                raise NotConfigured(f"The fleet cannot be previewed from this API: {e}") from e
        if state.fleet_provider is None:
            raise NotConfigured("This control plane manages no fleet (RGRID_FLEET and RGRID_LOCAL_GRID_HOME are "
                                   "not set for the API), so there is nothing to preview.")
        return state.fleet_provider


@router.get("/v1/workers", response_model=schemas.WorkersView)
def workers(engine: EngineDep, settings: SettingsDep, _operator: OperatorDep):
    """Every worker that is not deleted: state, server, slots used of total, age, time left in the
    paid hour, last heartbeat and Ray node."""
    return fleetqueries.workers(engine, settings.billing_period_seconds)


@router.post("/v1/workers/{worker_id}/retire", response_model=schemas.Retired, responses=responses(404, 409, 422))
def retire_worker(worker_id: str, engine: EngineDep, _operator: OperatorDep):
    """Retire a worker by hand: it takes no new runs, and once idle the next fleet update deletes
    its server (recorded with trigger `manual`)."""
    return fleetqueries.retire(engine, worker_id)


@router.get("/v1/fleet/preview", response_model=schemas.FleetPreviewView, responses=responses(
    409, 424, 501, why={409: "A fleet update is running; preview again when it has finished."}))
def fleet_preview(request: Request, engine: EngineDep, settings: SettingsDep, prices: PricesDep,
                  _operator: OperatorDep):
    """What the orchestrator would do now and what the engine would change, with the change in €
    per hour and per month. Changes nothing; 409 while a fleet update is running."""
    return fleetqueries.preview(engine, settings, fleet_provider(request), prices)


@router.get("/v1/fleet/history", response_model=schemas.FleetHistory, responses=responses(422))
def fleet_history(engine: EngineDep, _operator: OperatorDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 20,
                  before: Annotated[int | None, Query(ge=1, le=2**62, description="An event id: only older ones.")] = None):
    """Every fleet update (and failed update), newest first: time, trigger, diff, engine duration,
    result or error sentence. Page with `before` = the previous page's `next_before`."""
    return fleetqueries.history(engine, limit, before)

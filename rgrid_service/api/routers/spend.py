"""`GET /v1/fleet/costs`: the fleet's spend per clock hour (operator: it covers every tenant)."""
from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Query

from .. import schemas
from ..costs import MAX_HOURS, PricesDep, fleet_costs
from ..deps import EngineDep, OperatorDep, SettingsDep
from ..errors import OPERATOR, responses

router = APIRouter(tags=["fleet"], responses=responses(*OPERATOR))


@router.get("/v1/fleet/costs", response_model=schemas.FleetCosts, responses=responses(422))
def costs(engine: EngineDep, settings: SettingsDep, prices: PricesDep, _operator: OperatorDep,
          hours: int = Query(24, ge=1, le=MAX_HOURS)):
    """Per clock hour (UTC), the paid server hours that began in it, what runs paid of them and the
    idle rest, at the price table's prices (docs/architecture.md, Costs)."""
    return fleet_costs(engine, prices, timedelta(seconds=settings.billing_period_seconds), hours)

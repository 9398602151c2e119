"""Operator endpoints of this part: the fleet's spend per hour and the Prometheus metrics. Both
need an operator key: queue depth, worker counts and spend are about every tenant at once."""
from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from .. import schemas
from ..costs import MAX_HOURS, PricesDep, fleet_costs
from ..deps import EngineDep, OperatorDep, SettingsDep
from ..metrics import scrape

router = APIRouter(tags=["operator"])


@router.get("/v1/fleet/costs", response_model=schemas.FleetCosts)
def costs(engine: EngineDep, settings: SettingsDep, prices: PricesDep, _operator: OperatorDep,
          hours: int = Query(24, ge=1, le=MAX_HOURS)):
    """Per clock hour (UTC), the paid server hours that began in it, what runs paid of them and the
    idle rest, at the price table's prices (docs/architecture.md, Costs)."""
    return fleet_costs(engine, prices, timedelta(seconds=settings.billing_period_seconds), hours)


@router.get("/metrics", response_class=Response)
def metrics(request: Request, _operator: OperatorDep):
    """Prometheus text format: queue depth, runs by live status, workers by state."""
    return Response(scrape(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)

"""What the fleet cost, per clock hour, as the operator's `GET /v1/fleet/costs` shows it, and the
price table the API explains run costs with (loaded once by create_app, like the orchestrator's)."""
from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from .. import lifecycle
from ..fleet.prices import PriceTable
from ..fleet.spend import spans_since, workers_billed_since
from ..policies.costs import clock_hour, fleet_hours
from . import schemas

MAX_HOURS = 24 * 31


async def get_prices(request: Request) -> PriceTable:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request.
    return request.app.state.prices


PricesDep = Annotated[PriceTable, Depends(get_prices)]


def fleet_costs(engine: Engine, prices: PriceTable, period: timedelta, hours: int) -> schemas.FleetCosts:
    """The last `hours` clock hours (the current one included). Reads the priced workers that may
    have a paid hour in them and the attempts on those workers since the first hour began: an
    index range on execution_attempts.finished_at, as large as the window's runs."""
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
        since = clock_hour(now) - timedelta(hours=hours - 1)
        workers = workers_billed_since(conn, since, period, prices)
        spans = spans_since(conn, since, {w.worker_id for w in workers})
    rows = fleet_hours(workers, spans, since, now, period)
    return schemas.FleetCosts(
        hours=[schemas.FleetCostHour(hour=h.hour, spend_eur=round(h.spend_eur, 10), runs_eur=round(h.runs_eur, 10),
                                     idle_eur=round(h.idle_eur, 10), workers=h.workers) for h in rows],
        spend_eur=round(sum(h.spend_eur for h in rows), 10), runs_eur=round(sum(h.runs_eur for h in rows), 10),
        idle_eur=round(sum(h.idle_eur for h in rows), 10),
        prices={item: p.hourly_eur for item, p in sorted(prices.prices.items())},
        prices_as_of={item: p.as_of for item, p in sorted(prices.prices.items())},
    )

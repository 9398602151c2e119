from __future__ import annotations

from fastapi import APIRouter

from .. import queries, schemas
from ..deps import EngineDep, OperatorDep, SettingsDep
from ..errors import OPERATOR, responses

router = APIRouter(tags=["cluster"], responses=responses(*OPERATOR))


@router.get("/v1/cluster", response_model=schemas.ClusterView)
def cluster(engine: EngineDep, settings: SettingsDep, _operator: OperatorDep):
    """The Ray dashboard address, the workers that are not deleted with their heartbeats, and the
    fleet's latest decisions, updates and errors (why a worker was asked for, retired, or could not
    be had). Operator keys only."""
    return schemas.ClusterView(ray_dashboard_url=settings.ray_dashboard_url, workers=queries.workers(engine),
                               fleet_events=queries.fleet_events(engine))

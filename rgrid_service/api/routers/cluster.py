from __future__ import annotations

from fastapi import APIRouter

from .. import queries, schemas
from ..deps import EngineDep, SettingsDep, TenantDep

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster", response_model=schemas.ClusterView)
def cluster(engine: EngineDep, settings: SettingsDep, _tenant_id: TenantDep):
    """The Ray dashboard address and the workers that are not deleted, with their heartbeats."""
    return schemas.ClusterView(ray_dashboard_url=settings.ray_dashboard_url, workers=queries.workers(engine))

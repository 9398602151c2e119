from __future__ import annotations

from fastapi import APIRouter

from .. import queries, schemas
from ..deps import EngineDep, TenantDep

router = APIRouter(tags=["batches"])


@router.get("/v1/batches/{batch_id}", response_model=schemas.BatchView)
def batch_summary(batch_id: str, engine: EngineDep, tenant_id: TenantDep):
    """A batch's executions counted per status: one small query, however large the batch."""
    return queries.batch_view(engine, tenant_id, batch_id)

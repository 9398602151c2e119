from __future__ import annotations

from fastapi import APIRouter

from .. import queries, schemas, service
from ..deps import BellDep, EngineDep, StoreDep, TenantDep
from ..errors import KEYED, responses

router = APIRouter(tags=["batches"], responses=responses(*KEYED))


@router.get("/v1/batches/{batch_id}", response_model=schemas.BatchView, responses=responses(404, 422))
def batch_summary(batch_id: str, engine: EngineDep, tenant_id: TenantDep):
    """A batch's executions counted per status: one small query, however large the batch."""
    return queries.batch_view(engine, tenant_id, batch_id)


@router.post("/v1/batches/{batch_id}/cancel", response_model=schemas.BatchCanceled, responses=responses(404, 422))
def cancel_batch(batch_id: str, engine: EngineDep, store: StoreDep, tenant_id: TenantDep, bell: BellDep):
    """Cancel every execution of the batch that has not ended (uploading, queued or running), in
    one transaction. A running one stops at its runner's next lease renewal, as for a single
    cancel. 404 when this API key has no such batch."""
    canceled = service.cancel_batch(engine, tenant_id, batch_id, store)
    bell.ring()
    return canceled

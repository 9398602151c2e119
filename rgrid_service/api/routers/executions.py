from __future__ import annotations

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import progress, queries, schemas, service
from ..costs import PricesDep
from ..deps import BellDep, EngineDep, SettingsDep, StoreDep, TenantDep
from ..errors import KEYED, responses

router = APIRouter(tags=["executions"], responses=responses(*KEYED))

CREATE = responses(400, 409, 422, 429, 501, why={
    400: "Not created: a rule the schema cannot state was broken (the script must be one of the inputs, "
         "input names unique, batch_parallel needs a batch_id), or a name or value the schema describes "
         "is not allowed; the sentence says which. Nothing was created.",
    409: "An input uploaded before, to be reused, was deleted by retention at this moment; nothing was "
         "created: run it again to upload it anew.",
    501: "Env values were sent, and this control plane has no RGRID_SECRET_KEY to seal them with; nothing "
         "was created."})


@router.post("/v1/executions", response_model=schemas.Created, status_code=201, responses=CREATE)
async def create_execution(body: schemas.CreateExecution, engine: EngineDep, store: StoreDep,
                           settings: SettingsDep, tenant_id: TenantDep, bell: BellDep):
    # `async def` with one hop to the thread pool (a plain `def` route costs two: FastAPI validates
    # its answer in the pool too); every `rgrid run` begins here.
    return await run_in_threadpool(_create_and_ring, body, engine, store, settings, tenant_id, bell)


def _create_and_ring(body, engine, store, settings, tenant_id: str, bell) -> schemas.Created:
    service.check_one(body)
    created = service.create(engine, store, settings, tenant_id, [body])[0]
    bell.ring()  # it may be queued at once
    return created


@router.post("/v1/executions/bulk", response_model=schemas.CreatedMany, status_code=201, responses=CREATE)
def create_executions(body: schemas.CreateMany, engine: EngineDep, store: StoreDep,
                      settings: SettingsDep, tenant_id: TenantDep, bell: BellDep):
    """Up to 1000 executions in one request and one transaction (a batch over many files):
    each is checked as POST /v1/executions checks one, and if any is wrong none is created."""
    service.check_many(body.executions)
    created = service.create(engine, store, settings, tenant_id, body.executions)
    bell.ring()
    return schemas.CreatedMany(created=created)


@router.post("/v1/executions/{execution_id}/submit", response_model=schemas.ExecutionView,
             responses=responses(404, 409, 422, why={409: "Already submitted, or an input did not arrive as declared; "
                                                          "the sentence says which. Upload again and resubmit."}))
def submit_execution(execution_id: str, engine: EngineDep, store: StoreDep, tenant_id: TenantDep, bell: BellDep):
    submitted = service.submit(engine, store, tenant_id, execution_id)
    bell.ring()
    return schemas.ExecutionView.of(submitted)


NEXT_CURSOR = "X-Next-Cursor"
LISTED = {200: {"headers": {NEXT_CURSOR: {
    "description": "Present when older executions match: pass it back as `cursor` for the next page.",
    "schema": {"type": "string", "pattern": queries.CURSOR_PATTERN}}}},
    **responses(400, 422, why={400: "The cursor is not one this API gives out; the sentence says what to send."})}


@router.get("/v1/executions", response_model=list[schemas.ExecutionView], responses=LISTED)
def list_executions(
    response: Response,
    engine: EngineDep,
    tenant_id: TenantDep,
    prices: PricesDep,
    status: str | None = None,
    batch: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, json_schema_extra={"pattern": queries.CURSOR_PATTERN},
                               description=f"Go on after a previous page: its {NEXT_CURSOR} header, as it came."),
):
    """The tenant's executions, newest created first, `limit` per page (optionally of one status or
    batch). When older ones match, the X-Next-Cursor header holds the cursor of the next page; each
    page costs the same however much history is stored (docs/architecture.md, Read paths)."""
    rows, next_cursor = queries.list_executions(engine, tenant_id, status, batch, limit, cursor)
    if next_cursor is not None:
        response.headers[NEXT_CURSOR] = next_cursor
    current = progress.current_attempts(engine, rows)
    unpriced = queries.unpriced_workers(engine, prices, {ex.worker_id for ex in rows if ex.cost_eur == 0})
    return [schemas.ExecutionView.of(ex, current=current.get(ex.id), unpriced_why=unpriced.get(ex.worker_id))
            for ex in rows]


# The reads a follower repeats are `async def` handing their database work to the thread pool
# themselves: a plain `def` route costs two hops there and back (FastAPI validates a sync route's
# response in the pool too), these one. They answer JSON made in that hop from the model they
# built (response_model still documents it): FastAPI would validate the model again and serialise
# it on the event loop, which every request goes through.
def json_of(model: BaseModel) -> Response:
    """A model as the JSON FastAPI would send for it (by alias, nothing left out)."""
    return Response(model.__pydantic_serializer__.to_json(model, by_alias=True), media_type="application/json")


@router.get("/v1/executions/{execution_id}", response_model=schemas.ExecutionView, responses=responses(404, 422))
async def get_execution(execution_id: str, engine: EngineDep, tenant_id: TenantDep, prices: PricesDep,
                        settings: SettingsDep):
    return await run_in_threadpool(_execution_view, engine, tenant_id, execution_id, prices,
                                   settings.quota_max_running_runs)


def _execution_view(engine, tenant_id: str, execution_id: str, prices, running_limit: int) -> Response:
    with engine.connect() as conn:
        ex = queries.owned_row(conn, tenant_id, execution_id)
        attempts = queries.attempts_in(conn, execution_id)
    unpriced = queries.unpriced_workers(engine, prices, {ex.worker_id} if ex.cost_eur == 0 else set())
    waiting = progress.waiting_of(engine, ex, running_limit)
    return json_of(schemas.ExecutionView.of(ex, attempts, waiting=waiting, unpriced_why=unpriced.get(ex.worker_id)))


@router.post("/v1/executions/{execution_id}/cancel", response_model=schemas.ExecutionView,
             responses=responses(404, 422))
def cancel_execution(execution_id: str, engine: EngineDep, store: StoreDep, tenant_id: TenantDep, bell: BellDep):
    canceled = service.cancel(engine, tenant_id, execution_id, store)
    bell.changed(execution_id, ring_queue=True)  # its followers see the end; a canceled run's slot is free
    return schemas.ExecutionView.of(canceled)


@router.get("/v1/executions/{execution_id}/logs", response_model=schemas.LogPage, responses=responses(404, 422))
async def get_logs(
    execution_id: str,
    engine: EngineDep,
    tenant_id: TenantDep,
    after: int = Query(0, ge=0, le=2**62),
    limit: int = Query(1000, ge=1, le=10_000),
):
    return await run_in_threadpool(_log_page, engine, tenant_id, execution_id, after, limit)


def _log_page(engine, tenant_id: str, execution_id: str, after: int, limit: int) -> Response:
    return json_of(queries.owned_log_page(engine, tenant_id, execution_id, after, limit))


@router.get("/v1/executions/{execution_id}/outputs", response_model=list[schemas.OutputView],
            responses=responses(404, 410, 422, why={410: "Its files were deleted after the retention time (a sentence "
                                                          "says when)."}))
def get_outputs(execution_id: str, engine: EngineDep, store: StoreDep, tenant_id: TenantDep, settings: SettingsDep):
    service.files_kept(queries.owned(engine, tenant_id, execution_id), settings)
    return queries.outputs(engine, store, execution_id)

"""GET /v1/executions/{id}/follow and /v1/batches/{id}/follow: a run or a batch followed over one
connection (Server-Sent Events, api/follow.py), instead of polling its logs and counts."""
from __future__ import annotations

import weakref
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import follow
from ..deps import EngineDep, SettingsDep, TenantDep
from ..errors import KEYED, responses

router = APIRouter(tags=["follow"], responses=responses(*KEYED))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx must not buffer the stream
EVENT_STREAM = {200: {"content": {"text/event-stream": {}},
                      "description": "Server-Sent Events until the end (see the route's description)."}}
BUSY = {503: "The database is not reachable, or this API process already streams as many runs as it may "
             "(RGRID_FOLLOW_MAX_STREAMS); nothing was lost, try again in a few seconds."}


def streams(request: Request) -> follow.Streams:
    app_state = request.app.state
    if getattr(app_state, "follow_streams", None) is None:
        app_state.follow_streams = follow.Streams(app_state.settings.follow_max_streams)
    return app_state.follow_streams


def cursor(after: int, last_event_id: str | None) -> int:
    """Where a follower resumes: the event id it saw last (the header a reconnecting EventSource
    sends), else ?after=. A Last-Event-ID that is not an id this API sends (a number) is not ours
    to read, and is left aside, as the event-stream standard lets a server do."""
    value = (last_event_id or "").strip()
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return after


@router.get("/v1/executions/{execution_id}/follow", response_class=StreamingResponse,
            responses={**EVENT_STREAM, **responses(404, 422, 503, why=BUSY)})
async def follow_execution(
    execution_id: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    after: int = Query(0, ge=0, le=2**62, description="Send the chunks after this log cursor (a chunk id)."),
    last_event_id: Annotated[str | None, Header(
        description="The `id:` of the last event received: resume after it (a value that is not one is left aside).")] = None,
):
    """The run's logs and status as Server-Sent Events, until it has ended and its log is drained.

    `event: log` (id: the chunk id) carries one chunk: `{"id", "attempt", "stream": stdout|stderr|system,
    "data_b64"}`, the bytes exactly as the script wrote them. `event: status` carries `{"status",
    "exit_code", "reason", "worker_id", "attempt", "waiting"}` when it changes (while queued, again every
    few seconds with what the run waits for). `event: end` carries the final status and exit code; then
    the stream ends. A stream that ends without `end` (its time limit) is to be resumed. Resume with
    `Last-Event-ID` (or `?after=`) set to the last event id received: every chunk after it comes, none twice."""
    start = cursor(after, last_event_id)
    slot = streams(request).take()
    # Watched before the first read, so a commit told while it reads is not missed (Watch.expect).
    watcher: follow.Watcher = request.app.state.follow_watcher
    watch = watcher.watch(execution_id)
    try:
        first = await run_in_threadpool(follow.read_run, engine, tenant_id, execution_id, start)
    except BaseException:
        watcher.drop(watch)
        slot.release()
        raise
    body = follow.run_events(engine, settings, watcher, watch, tenant_id, execution_id, start, first, slot)
    slot.hold_until_gone(body)
    weakref.finalize(body, watcher.drop, watch)  # a client gone before the first byte
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/v1/batches/{batch_id}/follow", response_class=StreamingResponse,
            responses={**EVENT_STREAM, **responses(404, 422, 503, why=BUSY)})
def follow_batch(batch_id: str, request: Request, engine: EngineDep, settings: SettingsDep, tenant_id: TenantDep):
    """A batch's counts as Server-Sent Events: `event: progress` with the batch view (as GET
    /v1/batches/{id}) whenever it changes, `event: end` with the last one once every execution has
    ended; then the stream ends. A stream that ends without `end` (its time limit) is to be reopened."""
    slot = streams(request).take()
    try:
        first = follow.batch_counts(engine, tenant_id, batch_id)
    except BaseException:
        slot.release()
        raise
    body = follow.batch_events(engine, settings, tenant_id, batch_id, first, slot)
    slot.hold_until_gone(body)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)

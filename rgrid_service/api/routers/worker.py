"""The worker API (rgrid_core.workerwire): what a worker's agent and runner call with their worker
token. The rules are in api/workerapi; this module maps paths to them and names every status."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from rgrid_core import workerwire as wire

from .. import workerapi
from ..deps import BellDep, EngineDep, RunCall, RunCallDep, SettingsDep, StoreDep, WorkerDep
from ..errors import responses

# What each status means to a worker (rgrid_core.workerwire's docstring), for the OpenAPI.
WHY = {
    400: "The request is malformed (an output path that could escape its folder, log data that is not base64, "
         "outputs not in the store with their declared size); nothing was changed.",
    401: "No worker token, or one this control plane did not issue (API keys are not accepted here).",
    403: "The token's worker is given up on (dead, deleting, deleted: take the worker down), or the run or attempt "
         "is not this worker's, or (claim) the worker is not active.",
    404: "No such run (or no such input in it).",
    409: "Fenced: the run is no longer this attempt's (re-queued, canceled, already finished), or (claim) it is "
         "not queued any more.",
    501: "This control plane has no RGRID_SECRET_KEY, so it issues no worker tokens.",
    503: "The database or the object store is away; nothing changed: try again.",
}


def refusals(*statuses: int) -> dict:
    """The `responses=` of a worker route: every worker route may answer 401, 422, 501 and 503."""
    return responses(401, 422, 501, 503, *statuses, why=WHY)


router = APIRouter(tags=["worker"])

# An attempt number as the database holds it (a 32-bit integer): a larger one is a 422, never a
# database error.
AttemptPath = Annotated[int, Path(ge=0, le=2**31 - 1, description="The attempt the claim answered.")]

# Claim, renew and finish (every run's path) are `async def` handing their database work to the
# thread pool themselves: a plain `def` route costs two hops there and back (FastAPI validates a
# sync route's response in the pool too), these one. They take one dependency (deps.RunCall).


@router.post(wire.REGISTER, response_model=wire.RegisterResponse, responses=refusals(403))
def register(body: wire.RegisterRequest, worker: WorkerDep, engine: EngineDep, settings: SettingsDep, bell: BellDep):
    """The worker's agent announces itself; its record becomes active (a draining one stays draining)."""
    registered = workerapi.register(engine, settings, worker, body)
    bell.ring()  # new slots
    return registered


@router.get(wire.RUNTIME_DIGESTS, response_model=wire.RuntimeDigests, responses=refusals(403))
def runtime_digests(worker: WorkerDep, settings: SettingsDep):
    """The catalogue images' manifest digests: a worker pulls and runs only these images."""
    workerapi.require_alive(worker)
    return workerapi.runtime_digests(settings)


@router.post(wire.HEARTBEAT, response_model=wire.HeartbeatResponse, responses=refusals(403, 409))
def heartbeat(worker: WorkerDep, engine: EngineDep):
    """The worker is alive; the answer lists what the control plane has running on it. 403: it was
    given up on, and its agent takes it down."""
    return workerapi.heartbeat(engine, worker)


@router.post(wire.CLAIM, response_model=wire.ClaimResponse, responses=refusals(403, 404, 409))
async def claim(id: str, call: RunCallDep):
    """Take a run dispatched to this worker: its spec, its env values (never log them) and a
    presigned GET per input."""
    return await run_in_threadpool(claim_and_tell, call, id)


def claim_and_tell(call: RunCall, execution_id: str):
    """The claim's work in the thread pool (the route's and the worker lane's, api/workerlane.py)."""
    claimed = workerapi.claim(call.engine, call.store, call.keys, call.worker_id, execution_id, call.settings)
    call.bell.changed(execution_id)  # its followers see it running
    return claimed


@router.post(wire.RENEW, response_model=wire.RenewResponse, responses=refusals(400, 403, 404, 409))
async def renew(id: str, attempt: AttemptPath, body: wire.RenewRequest, call: RunCallDep):
    """Keep the attempt's lease; append its log chunks and stage times."""
    return await run_in_threadpool(renew_and_tell, call, id, attempt, body)


def renew_and_tell(call: RunCall, execution_id: str, attempt: int, body: wire.RenewRequest):
    """The renew's work in the thread pool (the route's and the worker lane's)."""
    renewed = workerapi.renew(call.engine, call.worker_id, execution_id, attempt, body)
    if body.logs:
        call.bell.changed(execution_id)  # its followers get the new chunks
    return renewed


@router.get(wire.INPUT_URL, response_model=wire.InputSpec, responses=refusals(403, 404, 409))
def input_url(id: str, attempt: AttemptPath, name: str, worker: WorkerDep, engine: EngineDep, store: StoreDep):
    """A fresh presigned GET of one input of the run."""
    return workerapi.input_url(engine, store, worker, id, attempt, name)


@router.post(wire.DAMAGED_INPUT, responses=refusals(403, 404, 409))
def damaged_input(id: str, attempt: AttemptPath, name: str, worker: WorkerDep, engine: EngineDep,
                  store: StoreDep) -> dict[str, bool]:
    """The input's stored copy failed its checksum: its tenant forgets it and its object, so the next
    run uploads it anew."""
    return workerapi.damaged_input(engine, worker, id, attempt, name, store)


@router.post(wire.OUTPUT_URLS, response_model=wire.OutputUrlsResponse, responses=refusals(400, 403, 404, 409))
def output_urls(id: str, attempt: AttemptPath, body: wire.OutputUrlsRequest, worker: WorkerDep, engine: EngineDep,
                store: StoreDep):
    """A presigned PUT per output of this attempt."""
    return workerapi.output_urls(engine, store, worker, id, attempt, body)


@router.post(wire.FINISH, response_model=wire.FinishResponse, responses=refusals(400, 403, 404, 409))
async def finish(id: str, attempt: AttemptPath, body: wire.FinishRequest, call: RunCallDep):
    """Commit the attempt's status and outputs (each checked in the store). Finishing again with the
    same status is answered the same; a refused attempt's uploaded outputs are deleted."""
    return await run_in_threadpool(finish_and_ring, call, id, attempt, body)


def finish_and_ring(call: RunCall, execution_id: str, attempt: int, body: wire.FinishRequest):
    """The finish's work in the thread pool (the route's and the worker lane's)."""
    finished = workerapi.finish(call.engine, call.store, call.worker_id, execution_id, attempt, body)
    # Its followers see the end, and a slot is free: one NOTIFY statement on PostgreSQL (in the pool too).
    call.bell.changed(execution_id, ring_queue=True)
    return finished

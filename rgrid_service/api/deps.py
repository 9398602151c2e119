"""The routers' dependencies: settings, engine and store (set on app.state by create_app), the
caller an API key speaks for, the operator scope that fleet endpoints require, and the worker a
worker token speaks for (the worker API)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from rgrid_core.workerwire import TOKEN_PREFIX

from ..auth import Caller, caller_for_hash, hash_key
from ..queuebell import Bell
from ..secrets import ControlPlaneKeys
from ..settings import ServiceSettings
from ..storage import ObjectStore
from . import workerapi
from .keycache import VerifiedKeys
from .workerapi import TokenWorker


# Every dependency that does no I/O (the lookups on app.state, the worker token's MAC check, the
# tenant or operator of a caller already found) is `async def`, so FastAPI runs it on the event
# loop: a plain `def` dependency costs a hop to the thread pool and back per request.
async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


async def get_bell(request: Request) -> Bell:
    return request.app.state.bell


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
BellDep = Annotated[Bell, Depends(get_bell)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False)

NEEDS_OPERATOR = ("This needs an operator API key; tenant keys see only their own runs. Ask your grid's operator, "
                  "or create one with `python -m rgrid_service.admin create-key NAME --operator`.")


async def get_caller(request: Request, engine: EngineDep,
                     creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> Caller:
    """The tenant and scope of the request's API key; 401 with a sentence without a valid one.
    A key this process verified less than api_key_cache_seconds ago is not looked up again
    (keycache.py); a lookup goes to the thread pool, the rest stays on the event loop."""
    if creds is None or not creds.credentials:
        raise HTTPException(401, "An API key is required: send 'Authorization: Bearer <key>' (the CLI reads it from RGRID_API_KEY).")
    if creds.credentials.startswith(TOKEN_PREFIX):
        raise HTTPException(401, "That is a worker token; it is good for the worker API (/v1/worker) only. "
                                 "Send an API key (RGRID_API_KEY) instead.")
    verified: VerifiedKeys = request.app.state.verified_keys
    key_hash = hash_key(creds.credentials)
    found = verified.get(key_hash)
    if found is None:
        read_began_at = verified.now()
        found = await run_in_threadpool(caller_for_hash, engine, key_hash)
        if found is None:
            raise HTTPException(401, "That API key is not valid. Check RGRID_API_KEY or ask for a new key.")
        verified.remember(key_hash, found, read_began_at)
    return found


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_tenant(caller: CallerDep) -> str:
    return caller.tenant_id


async def get_operator(caller: CallerDep) -> Caller:
    """An operator key's caller; a tenant key gets 403 with the sentence above."""
    if not caller.operator:
        raise HTTPException(403, NEEDS_OPERATOR)
    return caller


TenantDep = Annotated[str, Depends(get_tenant)]
OperatorDep = Annotated[Caller, Depends(get_operator)]



def get_worker(engine: EngineDep, request: Request,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> TokenWorker:
    """The worker a worker token speaks for, whatever its state (401 without a token the control
    plane issued)."""
    return workerapi.authenticate(engine, request.app.state.keys, creds.credentials if creds else None)


@dataclass(frozen=True)
class RunCall:
    """What claim, renew and finish (every run's path) need, from one dependency: FastAPI's solving
    of each dependency was the largest share of these requests' CPU after the database's, and
    they took five each (the token, engine, store, bell, settings)."""

    worker_id: str  # named by a valid token; its record is not read (see get_run_call)
    engine: Engine
    store: ObjectStore
    bell: Bell
    keys: ControlPlaneKeys
    settings: ServiceSettings


async def get_run_call(request: Request,
                       creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> RunCall:
    """The worker id a valid token names, without reading its record (claim, renew and finish fold
    whether that worker may still act into their fenced writes, and read it only on a refusal),
    with the app's engine, store, bell, keys and settings."""
    state = request.app.state
    worker_id = workerapi.token_worker_id(state.keys, creds.credentials if creds else None)
    return RunCall(worker_id, state.engine, state.store, state.bell, state.keys, state.settings)


async def get_live_worker(worker: Annotated[TokenWorker, Depends(get_worker)]) -> TokenWorker:
    """A worker the control plane has not given up on (403 for a dead, deleting or deleted one, or
    one whose token was revoked: its agent takes it down)."""
    return workerapi.require_alive(worker)


WorkerDep = Annotated[TokenWorker, Depends(get_live_worker)]
RunCallDep = Annotated[RunCall, Depends(get_run_call)]

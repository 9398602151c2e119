"""The routers' dependencies: settings, engine and store (set on app.state by create_app), the
caller an API key speaks for, and the operator scope that fleet endpoints require."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from ..auth import Caller, caller_for_key
from ..settings import ServiceSettings
from ..storage import ObjectStore


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False)

NEEDS_OPERATOR = ("This needs an operator API key; tenant keys see only their own runs. Ask your grid's operator, "
                  "or create one with `python -m rgrid_service.admin create-key NAME --operator`.")


def get_caller(engine: EngineDep,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> Caller:
    """The tenant and scope of the request's API key; 401 with a sentence without a valid one."""
    if creds is None or not creds.credentials:
        raise HTTPException(401, "An API key is required: send 'Authorization: Bearer <key>' (the CLI reads it from RGRID_API_KEY).")
    found = caller_for_key(engine, creds.credentials)
    if found is None:
        raise HTTPException(401, "That API key is not valid. Check RGRID_API_KEY or ask for a new key.")
    return found


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_tenant(caller: CallerDep) -> str:
    return caller.tenant_id


def get_operator(caller: CallerDep) -> Caller:
    """An operator key's caller; a tenant key gets 403 with the sentence above."""
    if not caller.operator:
        raise HTTPException(403, NEEDS_OPERATOR)
    return caller


TenantDep = Annotated[str, Depends(get_tenant)]
OperatorDep = Annotated[Caller, Depends(get_operator)]

"""The routers' dependencies: settings, engine and store (set on app.state by create_app) and the
tenant an API key belongs to."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from ..auth import tenant_for_key
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


def get_tenant(engine: EngineDep,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> str:
    """The tenant of the request's API key; 401 with a sentence without a valid one."""
    if creds is None or not creds.credentials:
        raise HTTPException(401, "An API key is required: send 'Authorization: Bearer <key>' (the CLI reads it from RGRID_API_KEY).")
    found = tenant_for_key(engine, creds.credentials)
    if found is None:
        raise HTTPException(401, "That API key is not valid. Check RGRID_API_KEY or ask for a new key.")
    return found


TenantDep = Annotated[str, Depends(get_tenant)]

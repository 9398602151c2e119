"""FastAPI control plane: executions, their inputs, logs and outputs, per tenant.

`create_app` builds the app: the settings, engine and object store go on app.state (the routers
take them through `deps`), the routers (`routers/`) serve the /v1 paths, and the rules they call
live in `service` (writes) and `queries` (reads)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..db.session import engine_for
from ..fleet.prices import load_price_table
from ..queuebell import Bell
from ..settings import ServiceSettings, get_settings
from ..storage import ObjectStore
from .errors import BODY_UNREADABLE, ServiceError, validation_sentence
from .follow import Watcher
from .keycache import VerifiedKeys
from .metrics import registry_for
from .routers import batches, cluster, executions, fleet, follow, health, metrics, runtimes, spend, worker
from .workerlane import WorkerLane

DB_AWAY = "The database is not reachable right now. Nothing was lost; try again in a few seconds."


def control_plane_keys(settings: ServiceSettings):
    """The keys for worker tokens and sealed env values; without RGRID_SECRET_KEY the API still
    serves tenants' runs without env values, and says at start-up what it cannot do."""
    from ..secrets import MissingSecretKey, keys_for

    try:
        return keys_for(settings)
    except MissingSecretKey as e:
        logging.getLogger("rgrid.api").error("%s Until then the worker API refuses every worker (501) and runs with "
                                             "env values are refused.", e)
        return None


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="RGrid control plane",
        version="1",
        description="Run ordinary scripts on an elastic grid. Every endpoint but /v1/health needs "
        "`Authorization: Bearer <API key>`; the cluster and fleet endpoints need an operator key.",
    )
    app.state.settings = settings
    app.state.engine = engine_for(settings.database_url)
    app.state.store = ObjectStore(settings)
    app.state.prices = load_price_table(settings.price_table)
    app.state.metrics = registry_for(app.state.engine)
    app.state.keys = control_plane_keys(settings)
    app.state.verified_keys = VerifiedKeys(settings.api_key_cache_seconds, settings.api_key_cache_size)
    # One watcher for every followed run; the bell wakes it at once after a commit that changed a run.
    app.state.follow_watcher = watcher = Watcher(app.state.engine, settings.follow_poll_seconds)
    app.state.bell = Bell(app.state.engine, settings.wake_host, settings.wake_port, followers=watcher.changed,
                          origin=watcher.origin)
    app.router.add_event_handler("shutdown", watcher.close)

    @app.exception_handler(ServiceError)
    async def refused(_request: Request, exc: ServiceError):
        body = {"detail": exc.detail} if exc.code is None else {"detail": exc.detail, "code": exc.code}
        return JSONResponse(status_code=exc.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def not_valid(_request: Request, exc: RequestValidationError):
        # 422 like every other refusal: {"detail": a sentence}, which names each wrong field.
        return JSONResponse(status_code=422, content={"detail": validation_sentence(exc.errors())})

    @app.exception_handler(StarletteHTTPException)
    async def http_refused(request: Request, exc: StarletteHTTPException):
        # FastAPI's own 400 for a body it cannot decode (not UTF-8) is a request that does not match
        # the API, as invalid JSON is: 422 with a sentence. Every other HTTPException as FastAPI answers it.
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return JSONResponse(status_code=422, content={"detail": BODY_UNREADABLE})
        return await http_exception_handler(request, exc)

    @app.exception_handler(DBAPIError)
    async def database_away(_request: Request, exc: DBAPIError):
        # Only "cannot talk to the database" becomes a 503; anything else is a real bug.
        if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
            raise exc
        return JSONResponse(status_code=503, content={"detail": DB_AWAY}, headers={"Retry-After": "5"})

    # The worker router first: FastAPI tries the routes in order, and every run's claim and finish
    # used to be matched against the twenty-odd tenant and operator routes before its own. No
    # path of one router is a path of another, so the order changes nothing else.
    for module in (worker, health, cluster, executions, batches, follow, fleet, spend, metrics, runtimes):
        app.include_router(module.router)
    # Claim, renew and finish as a worker sends them skip FastAPI's routing and validation
    # (workerlane.py); any other request, and any of theirs that is not so plain, goes on to FastAPI.
    app.add_middleware(WorkerLane, api=app)
    return app

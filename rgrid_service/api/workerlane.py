"""Claim, renew and finish (every run's worker-API requests) served in front of FastAPI's routing.

Through FastAPI each of these requests paid for routing (twice), dependency solving, parameter
and response validation and its exception machinery: about a sixth of the CPU that claim and
finish cost the API (docs/benchmarks.md). `WorkerLane`, an ASGI middleware create_app installs,
takes a request whose method, path, Authorization header and JSON body are exactly what a
worker sends, and calls the very functions the routes call (routers/worker.py), in the thread
pool, with the same deps.RunCall; the answer is the route's response model serialised as FastAPI
does it, and a refusal is rendered by the app's own exception handlers.

Anything else goes on to FastAPI untouched, with the body already read handed on: another path
or method, a root path, an Authorization header that is not `Bearer <token>`, a body that is
not JSON or not valid, an attempt that is not a plain number in range. So every 401 without a
token and every 422 sentence stay FastAPI's, and the routes stay where the OpenAPI documents
them. A refusal the lane renders is the one FastAPI would: the route would raise the same
ServiceError from the same function, and the same handler would answer it.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rgrid_core import workerwire as wire

from . import workerapi
from .deps import RunCall
from .routers import worker as routes

ATTEMPT_MAX = 2**31 - 1  # routers/worker.AttemptPath's bound: beyond it FastAPI answers the 422


@dataclass(frozen=True)
class Lane:
    """One route the lane serves: its path, the body model it takes (None: no body), the
    function the route calls in the thread pool, and the model it answers with."""

    path: str
    body: type[BaseModel] | None
    call: Callable[..., BaseModel]
    answer: type[BaseModel]

    @property
    def regex(self):
        return compile_path(self.path)[0]  # the pattern FastAPI matches the route's path with


LANES = (
    Lane(wire.CLAIM, None, routes.claim_and_tell, wire.ClaimResponse),
    Lane(wire.FINISH, wire.FinishRequest, routes.finish_and_ring, wire.FinishResponse),
    Lane(wire.RENEW, wire.RenewRequest, routes.renew_and_tell, wire.RenewResponse),
)
_MATCHERS = [(lane, lane.regex) for lane in LANES]


class WorkerLane:
    """The ASGI middleware: `app.add_middleware(WorkerLane, api=app)`."""

    def __init__(self, app: ASGIApp, api: Any):
        self.app = app
        self.api = api  # the FastAPI app: its state (engine, store, bell, keys, settings) and exception handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        for lane, regex in _MATCHERS:
            match = regex.fullmatch(scope["path"])
            if match:
                break
        else:
            return await self.app(scope, receive, send)
        token = _bearer_token(scope)
        params = match.groupdict()
        if token is None or not _attempt_in_range(params):
            return await self.app(scope, receive, send)
        args: list[Any] = [params["id"]] if "attempt" not in params else [params["id"], int(params["attempt"])]
        if lane.body is not None:
            if _header(scope, b"content-type") != "application/json":
                return await self.app(scope, receive, send)
            raw = await _read_body(receive)
            try:
                args.append(lane.body.model_validate(json.loads(raw)))
            except (ValueError, ValidationError):  # not JSON (JSONDecodeError, UnicodeDecodeError) or not valid
                return await self.app(scope, _replay(raw, receive), send)
        try:
            call = _run_call(self.api.state, token)
            result = await run_in_threadpool(lane.call, call, *args)
            # What FastAPI sends for a route's response model (its "dump_json" path).
            response = Response(lane.answer.model_validate(result).model_dump_json(by_alias=True),
                                media_type="application/json")
        except Exception as exc:  # noqa: BLE001 - answered as the app's handler answers it, or raised as FastAPI would
            response = await self._refusal(scope, receive, exc)
        await response(scope, receive, send)

    async def _refusal(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The app's exception handler's answer (the nearest class up the exception's MRO, as
        Starlette's ExceptionMiddleware picks it); an exception no handler takes is raised on."""
        handlers = self.api.exception_handlers
        handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
        if handler is None:
            raise exc
        request = Request(scope, receive)
        if inspect.iscoroutinefunction(handler):
            return await handler(request, exc)
        return await run_in_threadpool(handler, request, exc)


def _run_call(state, token: str) -> RunCall:
    """deps.get_run_call's answer for this token (raises the same refusal for a bad one)."""
    worker_id = workerapi.token_worker_id(state.keys, token)
    return RunCall(worker_id, state.engine, state.store, state.bell, state.keys, state.settings)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header, as Starlette's Headers.get reads it."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as FastAPI's HTTPBearer reads it;
    None for anything else (FastAPI then answers)."""
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _attempt_in_range(params: dict[str, str]) -> bool:
    attempt = params.get("attempt")
    return attempt is None or (attempt.isascii() and attempt.isdigit() and int(attempt) <= ATTEMPT_MAX)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: nothing more comes
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands on the body the lane read, then whatever the connection sends."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again

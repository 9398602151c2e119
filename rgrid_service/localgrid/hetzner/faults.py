"""Fault injection and the control API under /_standin (which the hcloud provider never calls).

Kinds: "5xx" (answer `status`, default 503), "rate_limit" (429), "slow" (delay `seconds`, then
answer normally), "hang" (no answer until the fault is cleared or `seconds` pass), "reset" (the
connection is reset before any answer, as when the network to the cloud is broken: clients see
"connection reset by peer"), "quota" (a server create answers 403 resource_limit_exceeded) and
"never_boot" (a created server stays `initializing` and no worker starts). `match` is a regex searched in "METHOD /path" (e.g.
"^POST /v1/servers$"); `count` limits how many requests it hits (null: until cleared).
"""
from __future__ import annotations

import asyncio
import itertools
import re
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import CODE_OF_STATUS, HetznerError, body, error_response

KINDS = ("5xx", "rate_limit", "slow", "hang", "reset", "quota", "never_boot")
SERVER_CREATE = "POST /v1/servers"


@dataclass
class Fault:
    id: int
    kind: str
    match: str | None = None
    count: int | None = None
    seconds: float | None = None
    status: int = 503
    hits: int = 0
    released: bool = False  # a hang's parked requests go on once it is cleared
    created: float = field(default_factory=time.time)

    def applies(self, method: str, path: str) -> bool:
        target = f"{method} {path}"
        if self.kind in ("quota", "never_boot") and target != SERVER_CREATE:
            return False
        return self.match is None or re.search(self.match, target) is not None


class Faults:
    """Thread-safe registry; take() consumes one hit of the first fault that applies."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._faults: list[Fault] = []
        self._hangs: dict[int, Fault] = {}  # hangs with parked requests, even once their count is used up

    def add(self, spec: dict) -> Fault:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise HetznerError("invalid_input", f"kind must be one of {', '.join(KINDS)}")
        count, seconds = spec.get("count"), spec.get("seconds")
        status = int(spec.get("status") or (429 if kind == "rate_limit" else 503))
        if count is not None and (not isinstance(count, int) or count < 1):
            raise HetznerError("invalid_input", "count must be a positive integer or null")
        if kind == "slow" and not isinstance(seconds, (int, float)):
            raise HetznerError("invalid_input", "a slow fault needs seconds")
        if kind == "5xx" and not 500 <= status <= 599:
            raise HetznerError("invalid_input", "status must be 5xx")
        if spec.get("match") is not None:
            try:
                re.compile(spec["match"])
            except re.error as e:
                raise HetznerError("invalid_input", f"match is not a valid regex: {e}") from None
        with self._lock:
            fault = Fault(next(self._ids), kind, spec.get("match"), count, seconds, status)
            self._faults.append(fault)
            return fault

    def clear(self, fault_id: int | None = None) -> None:
        """Remove one fault (or all) and release the requests its hangs hold."""
        with self._lock:
            for f in self._faults + list(self._hangs.values()):
                if fault_id is None or f.id == fault_id:
                    f.released = True
            self._faults = [f for f in self._faults if not f.released]
            self._hangs = {i: f for i, f in self._hangs.items() if not f.released}

    def list(self) -> list[dict]:
        """Every fault in force, and every hang still holding requests once its count is used up."""
        with self._lock:
            held = [f for f in self._hangs.values() if f not in self._faults and not f.released]
            return [asdict(f) for f in [*self._faults, *held]]

    def take(self, kinds: tuple[str, ...], method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.kind in kinds and f.applies(method, path):
                    f.hits += 1
                    if f.kind == "hang":
                        self._hangs[f.id] = f
                    if f.count is not None and f.hits >= f.count:
                        self._faults.remove(f)
                    return f
        return None


class FaultMiddleware:
    """Plain ASGI middleware, so a hung request only parks its own coroutine."""

    def __init__(self, app, faults: Faults):
        self.app, self.faults = app, faults

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        f = self.faults.take(("slow", "hang"), method, path)
        if f is not None and f.kind == "slow":
            await asyncio.sleep(f.seconds or 0)
        elif f is not None:
            deadline = time.monotonic() + f.seconds if f.seconds else None
            while not f.released and (deadline is None or time.monotonic() < deadline):
                await asyncio.sleep(0.05)
        if self.faults.take(("reset",), method, path) is not None:
            return await reset_connection(receive)
        f = self.faults.take(("5xx", "rate_limit"), method, path)
        if f is not None:
            if f.kind == "rate_limit":
                resp = error_response("rate_limit_exceeded", "limit of 3600 requests per hour reached", None, 429)
                resp.headers.update({"RateLimit-Limit": "3600", "RateLimit-Remaining": "0",
                                     "RateLimit-Reset": str(int(time.time()) + 1)})
            else:
                code = CODE_OF_STATUS.get(f.status, "server_error")
                resp = error_response(code, f"injected {f.status} error", None, f.status)
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


async def reset_connection(receive) -> None:
    """Drop this request's connection with a TCP reset and no answer. The server's transport is
    reached through uvicorn's `receive` (a method of its request cycle, which holds the transport;
    starlette passes it on unwrapped, unlike `send`)."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("a reset fault needs uvicorn's h11 or httptools server (no transport found)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    transport.abort()
    await asyncio.sleep(0)  # let the server see the connection lost before the app returns


def control_routes(faults: Faults, store, machines) -> list[Route]:
    async def list_faults(request: Request):
        return JSONResponse({"faults": faults.list()})

    async def add_fault(request: Request):
        return JSONResponse({"fault": asdict(faults.add(await body(request)))}, status_code=201)

    async def clear_faults(request: Request):
        faults.clear(request.path_params.get("id"))
        return Response(status_code=204)

    async def servers(request: Request):
        with store.lock:
            rows = [{"id": s["id"], "name": s["name"], "status": s["status"], "labels": s["labels"],
                     "pgid": s["_"].get("pgid"), "never_boot": bool(s["_"].get("never_boot")),
                     "log": str(store.log_path(s["id"])), "user_data": s["_"].get("user_data")}
                    for s in store.all("servers")]
        return JSONResponse({"servers": rows})

    async def config(request: Request):
        if request.method == "PUT":
            data = await body(request)
            with store.lock:
                for key in ("boot_delay_seconds", "action_delay_seconds", "max_servers", "init_delay_seconds"):
                    if key in data:
                        store.config[key] = data[key]
        return JSONResponse({"config": dict(store.config)})

    async def health(request: Request):
        return JSONResponse({"ok": True})

    return [
        Route("/_standin/faults", list_faults, methods=["GET"]),
        Route("/_standin/faults", add_fault, methods=["POST"]),
        Route("/_standin/faults", clear_faults, methods=["DELETE"]),
        Route("/_standin/faults/{id:int}", clear_faults, methods=["DELETE"]),
        Route("/_standin/servers", servers, methods=["GET"]),
        Route("/_standin/config", config, methods=["GET", "PUT"]),
        Route("/_standin/health", health, methods=["GET"]),
    ]

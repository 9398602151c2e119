"""The stand-in's ASGI app: Hetzner Cloud API v1 under /v1, fault control under /_standin.

Shapes follow Hetzner's API reference and hcloud-go's schema structs, so the hcloud Pulumi/Terraform
provider and the official clients decode every field they expect.
"""
from __future__ import annotations

import base64
import hashlib
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from . import api_firewalls, api_network, api_servers, api_volumes, catalog
from .common import HetznerError, body, check_labels, error_response, filtered, invalid, iso, paginate
from .faults import FaultMiddleware, Faults, control_routes
from .machines import Booter, Killer, Machines
from .state import Store


@dataclass
class StandIn:
    store: Store
    machines: Machines
    faults: Faults


class AuthMiddleware:
    """Every /v1 call needs `Authorization: Bearer <token>` (any non-empty token will do); each one
    first brings server states up to date, so what a client reads is never behind the clock."""

    def __init__(self, app, machines: Machines):
        self.app, self.machines = app, machines

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not re.fullmatch(r"Bearer\s+\S+", auth.strip()):
                resp = error_response("unauthorized", "unable to authenticate", None, 401)
                return await resp(scope, receive, send)
            self.machines.poll()
        return await self.app(scope, receive, send)


def _fingerprint(public_key) -> str:
    parts = str(public_key or "").split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        raise invalid("public_key", "invalid public key") from None
    if not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise invalid("public_key", "invalid public key")
    return ":".join(f"{b:02x}" for b in hashlib.md5(blob).digest())


def catalog_routes() -> list[Route]:
    """Read-only look-ups: server types, images, locations, datacenters."""
    def collection(key: str, items: list[dict], *filters: str, **extra):
        async def list_(request: Request):
            return paginate(request, filtered(request, items, *filters), key, **extra)

        async def get(request: Request):
            item = catalog.find(items, request.path_params["id"])
            if item is None:
                raise HetznerError("not_found", f"{key[:-1]} not found")
            return JSONResponse({key[:-1]: item})
        return [Route(f"/{key}", list_, methods=["GET"]), Route(f"/{key}/{{id:int}}", get, methods=["GET"])]

    return (collection("server_types", catalog.SERVER_TYPES, "name")
            + collection("images", catalog.IMAGES, "name", "architecture", "type", "status", "bound_to")
            + collection("locations", catalog.LOCATIONS, "name")
            + collection("datacenters", catalog.DATACENTERS, "name", recommendation=catalog.DATACENTERS[0]["id"]))


def ssh_key_routes(store: Store) -> list[Route]:
    async def list_keys(request: Request):
        with store.lock:
            return paginate(request, [store.public(k) for k in filtered(request, store.all("ssh_keys"), "name", "fingerprint")], "ssh_keys")

    async def get_key(request: Request):
        return JSONResponse({"ssh_key": store.public(store.get("ssh_keys", request.path_params["id"]))})

    async def create_key(request: Request):
        data = await body(request)
        with store.lock:
            if not isinstance(data.get("name"), str) or not data["name"]:
                raise invalid("name", "is required")
            fingerprint = _fingerprint(data.get("public_key"))
            store.unique_name("ssh_keys", data["name"])
            if any(k["fingerprint"] == fingerprint for k in store.all("ssh_keys")):
                raise HetznerError("uniqueness_error", "SSH key with the same fingerprint already exists",
                                   {"fields": [{"name": "public_key"}]})
            rec = {"id": store.new_id("ssh_keys"), "name": data["name"], "fingerprint": fingerprint,
                   "public_key": data["public_key"], "labels": check_labels(data.get("labels")),
                   "created": iso(store.clock())}
            store.put("ssh_keys", rec)
            return JSONResponse({"ssh_key": store.public(rec)}, status_code=201)

    async def update_key(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("ssh_keys", request.path_params["id"])
            if "name" in data:
                store.unique_name("ssh_keys", data["name"], but=rec["id"])
                rec["name"] = data["name"]
            if "labels" in data:
                rec["labels"] = check_labels(data["labels"])
            store.save()
            return JSONResponse({"ssh_key": store.public(rec)})

    async def delete_key(request: Request):
        with store.lock:
            store.remove("ssh_keys", store.get("ssh_keys", request.path_params["id"])["id"])
        return Response(status_code=204)

    return [Route("/ssh_keys", list_keys, methods=["GET"]), Route("/ssh_keys", create_key, methods=["POST"]),
            Route("/ssh_keys/{id:int}", get_key, methods=["GET"]),
            Route("/ssh_keys/{id:int}", update_key, methods=["PUT"]),
            Route("/ssh_keys/{id:int}", delete_key, methods=["DELETE"])]


def action_routes(store: Store) -> list[Route]:
    """GET /actions[/{id}], and per resource kind /{kind}/actions[/{id}] and /{kind}/{id}/actions."""
    def listing(request: Request, rtype: str | None = None, rid: int | None = None):
        with store.lock:
            items = [store.render_action(a) for a in store.all("actions")]
        if rtype:
            items = [a for a in items if any(r["type"] == rtype and rid in (None, r["id"]) for r in a["resources"])]
        ids = request.query_params.getlist("id")
        if ids:
            items = [a for a in items if str(a["id"]) in ids]
        return paginate(request, filtered(request, items, "status", "command"), "actions")

    def one(request: Request, rtype: str | None = None):
        with store.lock:
            action = store.render_action(store.get("actions", request.path_params["id"]))
        if rtype and not any(r["type"] == rtype for r in action["resources"]):
            raise HetznerError("not_found", "action not found")
        return JSONResponse({"action": action})

    routes = [Route("/actions", lambda r: listing(r), methods=["GET"]),
              Route("/actions/{id:int}", lambda r: one(r), methods=["GET"])]
    for kind, rtype in (("servers", "server"), ("networks", "network"), ("firewalls", "firewall"),
                        ("volumes", "volume")):
        routes += [
            Route(f"/{kind}/actions", lambda r, t=rtype: listing(r, t), methods=["GET"]),
            Route(f"/{kind}/actions/{{id:int}}", lambda r, t=rtype: one(r, t), methods=["GET"]),
            Route(f"/{kind}/{{rid:int}}/actions", lambda r, t=rtype, k=kind: _resource_listing(store, r, t, k, listing),
                  methods=["GET"]),
        ]
    return routes


def _resource_listing(store: Store, request: Request, rtype: str, kind: str, listing):
    rid = request.path_params["rid"]
    store.get(kind, rid)  # 404 for an unknown resource
    return listing(request, rtype, rid)


async def _error(request: Request, exc: Exception):
    if isinstance(exc, HetznerError):
        return exc.response()
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return error_response("method_not_allowed", "method not allowed", None, 405)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return error_response("not_found", "not found", None, 404)
    return error_response("server_error", f"internal error: {exc!r}", None, 500)


def create_app(state_dir: Path | str, *, boot_delay: float = 2.0, action_delay: float = 0.0,
               max_servers: int | None = None, booter: Booter | None = None, killer: Killer | None = None,
               kill_servers_on_exit: bool = False, tick: float = 0.05) -> Starlette:
    """The app; its lifespan starts the boot ticker and stops it (killing servers only if asked)."""
    store = Store(Path(state_dir), boot_delay=boot_delay, action_delay=action_delay, max_servers=max_servers)
    ctx = StandIn(store, Machines(store, booter, killer, tick), Faults())

    @asynccontextmanager
    async def lifespan(app):
        ctx.machines.start()
        try:
            yield
        finally:
            ctx.machines.stop(kill_servers=kill_servers_on_exit)

    v1 = (catalog_routes() + ssh_key_routes(store) + action_routes(store)
          + api_servers.routes(ctx) + api_network.routes(ctx) + api_firewalls.routes(ctx)
          + api_volumes.routes(ctx))
    app = Starlette(
        routes=[Mount("/v1", routes=v1), *control_routes(ctx.faults, store, ctx.machines)],
        middleware=[Middleware(AuthMiddleware, machines=ctx.machines), Middleware(FaultMiddleware, faults=ctx.faults)],
        exception_handlers={HetznerError: _error, HTTPException: _error, Exception: _error},
        lifespan=lifespan,
    )
    app.state.standin = ctx
    return app

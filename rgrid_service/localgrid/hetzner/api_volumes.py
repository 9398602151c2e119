"""Volumes: create (optionally attached to a server), list, get, update, delete, and the
attach / detach / resize / change_protection actions, as Hetzner has them.

A volume lives in one location and attaches to at most one server of that location; its
`linux_device` is the by-id path Hetzner gives it. Deleting a server detaches its volumes.
"""
from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import catalog
from .common import HetznerError, body, check_labels, filtered, invalid, iso, paginate

MIN_GB, MAX_GB = 10, 10240
FORMATS = ("ext4", "xfs")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")


def render_volume(store, rec: dict) -> dict:
    out = store.public(rec)
    out["location"] = catalog.find(catalog.LOCATIONS, rec["_"]["location"])
    return out


def detach_all(store, server_id: int) -> None:
    """A deleted server lets go of its volumes (Hetzner detaches them)."""
    for vol in store.all("volumes"):
        if vol["server"] == server_id:
            vol["server"] = None
    store.save()


def _size(value, field: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_GB <= value <= MAX_GB:
        raise invalid(field, f"must be an integer from {MIN_GB} to {MAX_GB} (GB)")
    return value


def _server_for(store, server_id, location: str | None) -> dict:
    server = store.find("servers", server_id)
    if server is None or server["status"] == "deleting":
        raise HetznerError("not_found", "server not found")
    if location is not None and server["_"]["location"] != location:
        raise invalid("server", "server and volume must be in the same location")
    return server


def _attach(store, vol: dict, server: dict) -> None:
    if vol["server"] is not None:
        raise HetznerError("volume_already_attached", "volume is already attached to a server, detach it first")
    vol["server"] = server["id"]
    if vol["id"] not in server["volumes"]:
        server["volumes"].append(vol["id"])


def _detach(store, vol: dict) -> int | None:
    server_id, vol["server"] = vol["server"], None
    server = store.find("servers", server_id) if server_id is not None else None
    if server is not None and vol["id"] in server["volumes"]:
        server["volumes"].remove(vol["id"])
    return server_id


def routes(ctx) -> list[Route]:
    store = ctx.store

    async def list_volumes(request: Request):
        with store.lock:
            items = filtered(request, store.all("volumes"), "name", "status")
            return paginate(request, [render_volume(store, v) for v in items], "volumes")

    async def get_volume(request: Request):
        with store.lock:
            return JSONResponse({"volume": render_volume(store, store.get("volumes", request.path_params["id"]))})

    async def create_volume(request: Request):
        data = await body(request)
        with store.lock:
            name = data.get("name")
            if not isinstance(name, str) or not _NAME.match(name):
                raise invalid("name", "is required and must be a valid name")
            size = _size(data.get("size"))
            fmt = data.get("format")
            if fmt is not None and fmt not in FORMATS:
                raise invalid("format", f"must be one of {', '.join(FORMATS)}")
            if data.get("automount") and data.get("server") is None:
                raise invalid("automount", "automount needs a server")
            server = None
            if data.get("server") is not None:
                server = _server_for(store, data["server"], None)
                location = server["_"]["location"]
            else:
                loc = catalog.find(catalog.LOCATIONS, data.get("location"))
                if loc is None:
                    raise invalid("location", "a location or a server is required")
                location = loc["name"]
            store.unique_name("volumes", name)
            vid = store.new_id("volumes")
            rec = {"id": vid, "name": name, "server": None, "status": "available", "size": size, "format": fmt,
                   "protection": {"delete": False}, "labels": check_labels(data.get("labels")),
                   "linux_device": f"/dev/disk/by-id/scsi-0HC_Volume_{vid}", "created": iso(store.clock()),
                   "_": {"location": location}}
            store.put("volumes", rec)
            action = store.action("create_volume", [(vid, "volume")])
            nexts = []
            if server is not None:
                _attach(store, rec, server)
                store.save()
                nexts.append(store.action("attach_volume", [(vid, "volume"), (server["id"], "server")]))
            return JSONResponse({"volume": render_volume(store, rec), "action": store.render_action(action),
                                 "next_actions": [store.render_action(a) for a in nexts]}, status_code=201)

    async def update_volume(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("volumes", request.path_params["id"])
            if "name" in data:
                if not isinstance(data["name"], str) or not _NAME.match(data["name"]):
                    raise invalid("name", "must be a valid name")
                store.unique_name("volumes", data["name"], but=rec["id"])
                rec["name"] = data["name"]
            if "labels" in data:
                rec["labels"] = check_labels(data["labels"])
            store.save()
            return JSONResponse({"volume": render_volume(store, rec)})

    async def delete_volume(request: Request):
        with store.lock:
            rec = store.get("volumes", request.path_params["id"])
            if rec["protection"]["delete"]:
                raise HetznerError("protected", "volume is delete protected")
            if rec["server"] is not None:
                raise HetznerError("volume_already_attached", "volume is attached to a server, detach it first")
            store.remove("volumes", rec["id"])
        return Response(status_code=204)

    async def volume_action(request: Request):
        data = await body(request)
        name = request.path_params["action"]
        with store.lock:
            rec = store.get("volumes", request.path_params["id"])
            resources = [(rec["id"], "volume")]
            if name == "attach":
                server = _server_for(store, data.get("server"), rec["_"]["location"])
                _attach(store, rec, server)
                resources.append((server["id"], "server"))
                command = "attach_volume"
            elif name == "detach":
                if rec["server"] is None:
                    raise HetznerError("invalid_input", "volume is not attached to a server")
                resources.append((_detach(store, rec), "server"))
                command = "detach_volume"
            elif name == "resize":
                size = _size(data.get("size"))
                if size < rec["size"]:
                    raise invalid("size", "a volume can only grow")
                rec["size"] = size
                command = "resize_volume"
            elif name == "change_protection":
                if "delete" in data:
                    rec["protection"]["delete"] = bool(data["delete"])
                command = "change_protection"
            else:
                raise HetznerError("not_found", f"volume action {name} not found")
            store.save()
            return JSONResponse({"action": store.render_action(store.action(command, resources))}, status_code=201)

    return [
        Route("/volumes", list_volumes, methods=["GET"]),
        Route("/volumes", create_volume, methods=["POST"]),
        Route("/volumes/{id:int}", get_volume, methods=["GET"]),
        Route("/volumes/{id:int}", update_volume, methods=["PUT"]),
        Route("/volumes/{id:int}", delete_volume, methods=["DELETE"]),
        Route("/volumes/{id:int}/actions/{action:str}", volume_action, methods=["POST"]),
    ]

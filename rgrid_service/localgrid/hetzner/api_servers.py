"""Servers: create (which boots a worker), list, get, update, delete, and the power/network actions."""
from __future__ import annotations

import re
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import catalog
from .api_firewalls import firewall_targets
from .api_network import attach
from .api_volumes import detach_all
from .common import HetznerError, body, check_labels, filtered, invalid, iso, paginate

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
USER_DATA_LIMIT = 32 * 1024


def render_server(store, rec: dict) -> dict:
    p = rec["_"]
    location = catalog.find(catalog.LOCATIONS, p["location"])
    out = store.public(rec)
    out.update(server_type=catalog.find(catalog.SERVER_TYPES, p["server_type"]),
               datacenter=catalog.datacenter_of(p["location"]), location=location,
               image=catalog.find(catalog.IMAGES, p["image"]))
    out["public_net"]["firewalls"] = [{"id": f["id"], "status": "applied"} for f in store.all("firewalls")
                                      if rec["id"] in firewall_targets(store, f)]
    return out


def _name(value) -> str:
    if not isinstance(value, str) or not _HOSTNAME.match(value):
        raise invalid("name", "must be a valid hostname (RFC 1123)")
    return value


def _server_type(value) -> dict:
    st = catalog.find(catalog.SERVER_TYPES, value)
    if st is None:
        raise invalid("server_type", f"server type {value!r} not found")
    return st


def _location(data: dict) -> str:
    if data.get("location") and data.get("datacenter"):
        raise invalid("location", "location and datacenter are mutually exclusive")
    if data.get("datacenter"):
        dc = catalog.find(catalog.DATACENTERS, data["datacenter"])
        if dc is None:
            raise invalid("datacenter", f"datacenter {data['datacenter']!r} not found")
        return dc["location"]["name"]
    loc = catalog.find(catalog.LOCATIONS, data.get("location") or "fsn1")
    if loc is None:
        raise invalid("location", f"location {data.get('location')!r} not found")
    return loc["name"]


def validate_create(store, ctx, data: dict) -> dict:
    """Everything Hetzner checks before it creates a server; returns the normalized request."""
    name = _name(data.get("name"))
    st = _server_type(data.get("server_type"))
    if st["deprecated"]:
        raise invalid("server_type", f"server type {st['name']} is deprecated and can no longer be ordered")
    image = catalog.image_for(data.get("image"), st["architecture"])
    if image is None:
        raise invalid("image", f"image {data.get('image')!r} not found for architecture {st['architecture']}")
    location = _location(data)
    labels = check_labels(data.get("labels"))
    user_data = data.get("user_data") or ""
    if not isinstance(user_data, str) or len(user_data.encode()) > USER_DATA_LIMIT:
        raise invalid("user_data", f"must be a string of at most {USER_DATA_LIMIT} bytes")
    keys = []
    for k in data.get("ssh_keys") or []:
        rec = store.find("ssh_keys", k) if str(k).isdigit() else next(
            (s for s in store.all("ssh_keys") if s["name"] == k), None)
        if rec is None:
            raise invalid("ssh_keys", f"SSH key {k!r} not found")
        keys.append(rec["id"])
    networks = [store.find("networks", n) for n in data.get("networks") or []]
    if None in networks:
        raise invalid("networks", "network not found")
    firewalls = [store.find("firewalls", (f or {}).get("firewall")) for f in data.get("firewalls") or []]
    if None in firewalls:
        raise invalid("firewalls", "firewall not found")
    if data.get("volumes") or data.get("placement_group"):
        raise invalid("volumes" if data.get("volumes") else "placement_group", "not found")
    public = data.get("public_net") or {}
    if public.get("ipv4") or public.get("ipv6"):
        raise invalid("public_net", "primary IP not found")
    v4, v6 = bool(public.get("enable_ipv4", True)), bool(public.get("enable_ipv6", True))
    if not (v4 or v6 or networks):
        raise invalid("public_net", "a server needs a public IP or a private network")
    store.unique_name("servers", name)
    limit = store.config.get("max_servers")
    if ctx.faults.take(("quota",), "POST", "/v1/servers") or (
            limit is not None and len(store.live_servers()) >= int(limit)):
        raise HetznerError("resource_limit_exceeded", "server limit exceeded",
                           {"limits": [{"name": "project_limits.server", "max": limit}]})
    return {"name": name, "st": st, "image": image, "location": location, "labels": labels, "user_data": user_data,
            "ssh_keys": keys, "networks": networks, "firewalls": firewalls, "v4": v4, "v6": v6,
            "start": data.get("start_after_create", True) is not False,
            "never_boot": ctx.faults.take(("never_boot",), "POST", "/v1/servers") is not None}


def create_server(store, ctx, data: dict) -> dict:
    with store.lock:
        req = validate_create(store, ctx, data)
        sid, now = store.new_id("servers"), store.clock()
        public_net = {
            "ipv4": {"id": store.new_id("primary_ips"), "ip": "127.0.0.1", "blocked": False,
                     "dns_ptr": "localhost"} if req["v4"] else None,
            "ipv6": {"id": store.new_id("primary_ips"), "ip": f"2001:db8:{sid:x}::/64", "blocked": False,
                     "dns_ptr": []} if req["v6"] else None,
            "floating_ips": [], "firewalls": []}
        rec = {"id": sid, "name": req["name"], "status": "initializing", "created": iso(now),
               "public_net": public_net, "private_net": [], "included_traffic": 20 * catalog.TiB,
               "outgoing_traffic": 0, "ingoing_traffic": 0, "backup_window": None, "rescue_enabled": False,
               "iso": None, "locked": False, "protection": {"delete": False, "rebuild": False},
               "labels": req["labels"], "volumes": [], "primary_disk_size": req["st"]["disk"],
               "placement_group": None, "load_balancers": [],
               "_": {"server_type": req["st"]["id"], "location": req["location"], "image": req["image"]["id"],
                     "user_data": req["user_data"], "ssh_keys": req["ssh_keys"], "never_boot": req["never_boot"],
                     "pgid": None, "pg_start": None}}
        for net in req["networks"]:
            attach(store, rec, net)
        for fw in req["firewalls"]:
            fw["applied_to"].append({"type": "server", "server": {"id": sid}})
        store.put("servers", rec)
        boot_at = store.schedule_boot(rec, power_on=req["start"], status="initializing")
        action = store.action("create_server", [(sid, "server")], done_at=boot_at)
        nexts = [store.action("start_server", [(sid, "server")], done_at=boot_at)] if req["start"] else []
        nexts += [store.action("attach_to_network", [(sid, "server"), (n["id"], "network")], done_at=boot_at)
                  for n in req["networks"]]
        nexts += [store.action("apply_firewall", [(f["id"], "firewall"), (sid, "server")], done_at=boot_at)
                  for f in req["firewalls"]]
        return {"server": render_server(store, rec), "action": store.render_action(action),
                "next_actions": [store.render_action(a) for a in nexts],
                "root_password": None if req["ssh_keys"] else secrets.token_urlsafe(15)}


def _reboot_later(ctx, server_id: int):
    def go():
        with ctx.store.lock:
            s = ctx.store.find("servers", server_id)
            if s is not None and s["status"] == "starting":
                ctx.store.schedule_boot(s, power_on=True, status="starting")
    return go


def server_action(ctx, rec: dict, name: str, data: dict) -> dict:
    """Apply one server action; returns the action record (finished now or when the boot is done)."""
    store, sid, done_at = ctx.store, rec["id"], "auto"
    resources = [(sid, "server")]
    if rec["status"] == "deleting":
        raise HetznerError("locked", "server is being deleted")
    if name == "poweron" or name in ("reboot", "reset") and rec["status"] == "off":
        if rec["status"] == "off":
            done_at = store.schedule_boot(rec, power_on=True, status="starting")
        elif rec["status"] == "initializing":  # created with start_after_create=false, not up yet
            rec["_"]["power"] = "on"
            done_at = rec["_"].get("boot_at") or "auto"
    elif name in ("poweroff", "shutdown"):
        rec["status"] = "off"
        rec["_"].update(power="off", boot_at=None)
        ctx.machines.halt(sid)
    elif name in ("reboot", "reset"):
        rec["status"] = "starting"
        rec["_"].update(power="on", boot_at=None)
        ctx.machines.halt(sid, then=_reboot_later(ctx, sid))
    elif name == "change_type":
        st = _server_type(data.get("server_type"))
        if rec["status"] != "off":
            raise HetznerError("server_not_stopped", "server must be stopped before changing its type")
        rec["_"]["server_type"] = st["id"]
        if data.get("upgrade_disk"):
            rec["primary_disk_size"] = st["disk"]
    elif name in ("attach_to_network", "detach_from_network", "change_alias_ips"):
        net = store.find("networks", data.get("network"))
        if net is None:
            raise HetznerError("not_found", "network not found")
        resources.append((net["id"], "network"))
        if name == "attach_to_network":
            attach(store, rec, net, data.get("ip"), data.get("alias_ips"), data.get("ip_range"))
        else:
            entry = next((p for p in rec["private_net"] if p["network"] == net["id"]), None)
            if entry is None:
                raise HetznerError("server_not_attached_to_network", "server is not attached to this network")
            if name == "detach_from_network":
                rec["private_net"].remove(entry)
            else:
                entry["alias_ips"] = [str(a) for a in data.get("alias_ips") or []]
    elif name == "change_protection":
        for key in ("delete", "rebuild"):
            if key in data:
                rec["protection"][key] = bool(data[key])
    elif name in ("enable_backup", "disable_backup"):
        rec["backup_window"] = "22-02" if name == "enable_backup" else None
    else:
        raise HetznerError("not_found", f"server action {name} not found")
    store.save()
    command = {"poweron": "start_server", "poweroff": "stop_server", "shutdown": "shutdown_server",
               "reboot": "reboot_server", "reset": "reset_server", "change_type": "change_server_type"}.get(name, name)
    return store.action(command, resources, done_at=done_at)


def routes(ctx) -> list[Route]:
    store = ctx.store

    async def list_servers(request: Request):
        with store.lock:
            items = filtered(request, store.all("servers"), "name", "status")
            return paginate(request, [render_server(store, s) for s in items], "servers")

    async def get_server(request: Request):
        with store.lock:
            return JSONResponse({"server": render_server(store, store.get("servers", request.path_params["id"]))})

    async def post_server(request: Request):
        return JSONResponse(create_server(store, ctx, await body(request)), status_code=201)

    async def update_server(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("servers", request.path_params["id"])
            if "name" in data:
                store.unique_name("servers", _name(data["name"]), but=rec["id"])
                rec["name"] = data["name"]
            if "labels" in data:
                rec["labels"] = check_labels(data["labels"])
            store.save()
            return JSONResponse({"server": render_server(store, rec)})

    async def delete_server(request: Request):
        with store.lock:
            rec = store.get("servers", request.path_params["id"])
            if rec["protection"]["delete"]:
                raise HetznerError("protected", "server is delete protected")
            if rec["status"] != "deleting":
                action = store.action("delete_server", [(rec["id"], "server")], done_at=None)
                rec["status"] = "deleting"
                rec["_"].update(delete_action=action["id"], power="off", boot_at=None)
                for fw in store.all("firewalls"):
                    fw["applied_to"] = [r for r in fw["applied_to"]
                                        if not (r["type"] == "server" and r["server"]["id"] == rec["id"])]
                rec["volumes"] = []
                detach_all(store, rec["id"])
                ctx.machines.delete(rec["id"], action["id"])
            action = store.get("actions", rec["_"]["delete_action"])
            return JSONResponse({"action": store.render_action(action)})

    async def post_action(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("servers", request.path_params["id"])
            action = server_action(ctx, rec, request.path_params["action"], data)
            return JSONResponse({"action": store.render_action(action)}, status_code=201)

    return [
        Route("/servers", list_servers, methods=["GET"]),
        Route("/servers", post_server, methods=["POST"]),
        Route("/servers/{id:int}", get_server, methods=["GET"]),
        Route("/servers/{id:int}", update_server, methods=["PUT"]),
        Route("/servers/{id:int}", delete_server, methods=["DELETE"]),
        Route("/servers/{id:int}/actions/{action:str}", post_action, methods=["POST"]),
    ]

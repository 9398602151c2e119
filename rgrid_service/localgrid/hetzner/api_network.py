"""Networks: subnets, routes and how servers get their private addresses, as Hetzner has them."""
from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import catalog
from .common import HetznerError, body, check_labels, filtered, invalid, iso, paginate

ZONES = {"eu-central", "us-east", "us-west", "ap-southeast"}


def cidr(value, field: str, private: bool = False) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise invalid(field, f"{value!r} is not a valid network in CIDR notation") from None
    if private and (net.version != 4 or not net.is_private or net.prefixlen > 30):
        raise invalid(field, "must be a private (RFC 1918) IPv4 range of at least /30")
    return net


def render_network(store, rec: dict) -> dict:
    out = store.public(rec)
    out["servers"] = [s["id"] for s in store.live_servers()
                      if any(p["network"] == rec["id"] for p in s["private_net"])]
    return out


def _used_ips(store, network_id: int) -> set[str]:
    used = set()
    for s in store.all("servers"):
        for p in s["private_net"]:
            if p["network"] == network_id:
                used |= {p["ip"], *p["alias_ips"]}
    return used


def attach(store, server: dict, network: dict, ip=None, alias_ips=None, ip_range=None) -> dict:
    """Give the server an address in one of the network's subnets of its zone (Hetzner's rules)."""
    if any(p["network"] == network["id"] for p in server["private_net"]):
        raise HetznerError("server_already_attached", "server is already attached to this network")
    zone = catalog.find(catalog.LOCATIONS, server["_"]["location"])["network_zone"]
    subnets = [ipaddress.ip_network(s["ip_range"]) for s in network["subnets"]
               if s["network_zone"] == zone and s["type"] in ("cloud", "server")]
    if ip_range is not None:
        subnets = [n for n in subnets if n.subnet_of(cidr(ip_range, "ip_range"))]
    if not subnets:
        raise HetznerError("no_subnet_available", f"network has no subnet in network zone {zone}")
    net_range = ipaddress.ip_network(network["ip_range"])
    taken = _used_ips(store, network["id"]) | {str(next(net_range.hosts()))}
    if ip is not None:
        if not any(ipaddress.ip_address(ip) in n for n in subnets) or ip in taken:
            raise HetznerError("ip_not_available", f"IP {ip} is not available in this network")
        chosen = ip
    else:
        chosen = next((str(h) for n in subnets for h in n.hosts() if str(h) not in taken), None)
        if chosen is None:
            raise HetznerError("no_subnet_available", "no free IP left in the network's subnets")
    sid, nid = server["id"], network["id"]
    entry = {"network": nid, "ip": chosen, "alias_ips": [str(a) for a in (alias_ips or [])],
             "mac_address": f"86:00:{sid >> 16 & 255:02x}:{sid >> 8 & 255:02x}:{sid & 255:02x}:{nid & 255:02x}"}
    server["private_net"].append(entry)
    return entry


def _subnet(store, network: dict, spec: dict) -> dict:
    if spec.get("type") not in ("cloud", "server", "vswitch"):
        raise invalid("type", "must be cloud, server or vswitch")
    if spec.get("network_zone") not in ZONES:
        raise invalid("network_zone", f"must be one of {', '.join(sorted(ZONES))}")
    whole = ipaddress.ip_network(network["ip_range"])
    existing = [ipaddress.ip_network(s["ip_range"]) for s in network["subnets"]]
    if spec.get("ip_range"):
        net = cidr(spec["ip_range"], "ip_range")
    else:  # Hetzner picks the next free /24 (or the whole range if that is smaller)
        size = max(24, whole.prefixlen)
        net = next((n for n in whole.subnets(new_prefix=size) if not any(n.overlaps(e) for e in existing)), None)
        if net is None:
            raise invalid("ip_range", "no free range left in the network")
    if not net.subnet_of(whole) or any(net.overlaps(e) for e in existing):
        raise invalid("ip_range", "must lie inside the network's ip_range and not overlap another subnet")
    out = {"type": spec["type"], "ip_range": str(net), "network_zone": spec["network_zone"],
           "gateway": str(next(whole.hosts()))}
    if spec["type"] == "vswitch":
        out["vswitch_id"] = int(spec.get("vswitch_id") or 0)
    return out


def routes(ctx) -> list[Route]:
    store = ctx.store

    async def list_networks(request: Request):
        with store.lock:
            return paginate(request, [render_network(store, n) for n in filtered(request, store.all("networks"), "name")], "networks")

    async def get_network(request: Request):
        with store.lock:
            return JSONResponse({"network": render_network(store, store.get("networks", request.path_params["id"]))})

    async def create_network(request: Request):
        data = await body(request)
        with store.lock:
            if not isinstance(data.get("name"), str) or not data["name"]:
                raise invalid("name", "is required")
            store.unique_name("networks", data["name"])
            rec = {"id": store.new_id("networks"), "name": data["name"], "created": iso(store.clock()),
                   "ip_range": str(cidr(data.get("ip_range"), "ip_range", private=True)), "subnets": [], "routes": [],
                   "load_balancers": [], "protection": {"delete": False}, "labels": check_labels(data.get("labels")),
                   "expose_routes_to_vswitch": bool(data.get("expose_routes_to_vswitch", False)), "_": {}}
            for spec in data.get("subnets") or []:
                rec["subnets"].append(_subnet(store, rec, spec))
            for route in data.get("routes") or []:
                rec["routes"].append({"destination": str(cidr(route.get("destination"), "destination")),
                                      "gateway": str(route.get("gateway"))})
            store.put("networks", rec)
            return JSONResponse({"network": render_network(store, rec)}, status_code=201)

    async def update_network(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("networks", request.path_params["id"])
            if "name" in data:
                store.unique_name("networks", data["name"], but=rec["id"])
                rec["name"] = data["name"]
            if "labels" in data:
                rec["labels"] = check_labels(data["labels"])
            if "expose_routes_to_vswitch" in data:
                rec["expose_routes_to_vswitch"] = bool(data["expose_routes_to_vswitch"])
            store.save()
            return JSONResponse({"network": render_network(store, rec)})

    async def delete_network(request: Request):
        with store.lock:
            rec = store.get("networks", request.path_params["id"])
            if rec["protection"]["delete"]:
                raise HetznerError("protected", "network is delete protected")
            for s in store.all("servers"):  # attached servers are detached, as on Hetzner
                s["private_net"] = [p for p in s["private_net"] if p["network"] != rec["id"]]
            store.remove("networks", rec["id"])
        return Response(status_code=204)

    async def network_action(request: Request):
        data = await body(request)
        name = request.path_params["action"]
        with store.lock:
            rec = store.get("networks", request.path_params["id"])
            if name == "add_subnet":
                rec["subnets"].append(_subnet(store, rec, data))
            elif name == "delete_subnet":
                net = cidr(data.get("ip_range"), "ip_range")
                if any(ipaddress.ip_address(ip) in net for ip in _used_ips(store, rec["id"])):
                    raise HetznerError("resource_in_use", "servers are still attached to this subnet")
                rec["subnets"] = [s for s in rec["subnets"] if s["ip_range"] != str(net)]
            elif name in ("add_route", "delete_route"):
                route = {"destination": str(cidr(data.get("destination"), "destination")), "gateway": str(data.get("gateway"))}
                rec["routes"] = [r for r in rec["routes"] if r != route] + ([route] if name == "add_route" else [])
            elif name == "change_ip_range":
                net = cidr(data.get("ip_range"), "ip_range", private=True)
                if not all(ipaddress.ip_network(s["ip_range"]).subnet_of(net) for s in rec["subnets"]):
                    raise invalid("ip_range", "must contain all subnets")
                rec["ip_range"] = str(net)
            elif name == "change_protection":
                if "delete" in data:
                    rec["protection"]["delete"] = bool(data["delete"])
            else:
                raise HetznerError("not_found", f"network action {name} not found")
            store.save()
            command = {"add_subnet": "add_subnet", "delete_subnet": "delete_subnet"}.get(name, name)
            action = store.action(command, [(rec["id"], "network")])
            return JSONResponse({"action": store.render_action(action)}, status_code=201)

    return [
        Route("/networks", list_networks, methods=["GET"]),
        Route("/networks", create_network, methods=["POST"]),
        Route("/networks/{id:int}", get_network, methods=["GET"]),
        Route("/networks/{id:int}", update_network, methods=["PUT"]),
        Route("/networks/{id:int}", delete_network, methods=["DELETE"]),
        Route("/networks/{id:int}/actions/{action:str}", network_action, methods=["POST"]),
    ]

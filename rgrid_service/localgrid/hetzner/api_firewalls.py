"""Firewalls: rules, apply_to (servers or label selectors) and the actions that change them."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api_network import cidr
from .common import HetznerError, body, check_labels, filtered, invalid, iso, paginate, selector

PROTOCOLS = {"tcp", "udp", "icmp", "esp", "gre"}


def firewall_targets(store, fw: dict) -> list[int]:
    """Servers a firewall applies to: named directly or matched by one of its label selectors."""
    live = store.live_servers()
    ids = {r["server"]["id"] for r in fw["applied_to"] if r["type"] == "server"}
    for r in fw["applied_to"]:
        if r["type"] == "label_selector":
            match = selector(r["label_selector"]["selector"])
            ids |= {s["id"] for s in live if match(s["labels"])}
    return sorted(i for i in ids if any(s["id"] == i for s in live))


def render_firewall(store, rec: dict) -> dict:
    out = store.public(rec)
    for r in out["applied_to"]:
        if r["type"] == "label_selector":
            match = selector(r["label_selector"]["selector"])
            r["applied_to_resources"] = [{"type": "server", "server": {"id": s["id"]}}
                                         for s in store.live_servers() if match(s["labels"])]
    return out


def _rules(rules) -> list[dict]:
    out = []
    for i, r in enumerate(rules or []):
        f = f"rules[{i}]"
        if not isinstance(r, dict) or r.get("direction") not in ("in", "out"):
            raise invalid(f"{f}.direction", "must be in or out")
        if r.get("protocol") not in PROTOCOLS:
            raise invalid(f"{f}.protocol", f"must be one of {', '.join(sorted(PROTOCOLS))}")
        port = r.get("port")
        if r["protocol"] in ("tcp", "udp"):
            parts = str(port).split("-") if port else []
            if port != "any" and not (1 <= len(parts) <= 2 and all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts)):
                raise invalid(f"{f}.port", "tcp and udp rules need a port, a range a-b or any")
        elif port is not None:
            raise invalid(f"{f}.port", f"{r['protocol']} rules take no port")
        wanted, unwanted = ("source_ips", "destination_ips") if r["direction"] == "in" else ("destination_ips", "source_ips")
        if not r.get(wanted) or r.get(unwanted):
            raise invalid(f"{f}.{wanted}", f"'{r['direction']}' rules need {wanted} (and no {unwanted})")
        ips = [str(cidr(ip, f"{f}.{wanted}")) for ip in r[wanted]]
        out.append({"direction": r["direction"], "source_ips": ips if wanted == "source_ips" else [],
                    "destination_ips": ips if wanted == "destination_ips" else [], "protocol": r["protocol"],
                    "port": port, "description": r.get("description")})
    return out


def _resources(store, items, field: str) -> list[dict]:
    out = []
    for r in items or []:
        if isinstance(r, dict) and r.get("type") == "server" and isinstance(r.get("server"), dict):
            if store.find("servers", r["server"].get("id")) is None:
                raise HetznerError("firewall_resource_not_found", f"server {r['server'].get('id')} not found")
            out.append({"type": "server", "server": {"id": int(r["server"]["id"])}})
        elif isinstance(r, dict) and r.get("type") == "label_selector" and isinstance(r.get("label_selector"), dict):
            selector(r["label_selector"].get("selector"))  # validates
            out.append({"type": "label_selector", "label_selector": {"selector": r["label_selector"]["selector"]}})
        else:
            raise invalid(field, "each entry needs type server (with server.id) or label_selector")
    return out


def _resource_actions(store, command: str, fw: dict, resources: list[dict]) -> list[dict]:
    return [store.action(command, [(fw["id"], "firewall")]
                         + ([(r["server"]["id"], "server")] if r["type"] == "server" else []))
            for r in resources]


def routes(ctx) -> list[Route]:
    store = ctx.store

    async def list_firewalls(request: Request):
        with store.lock:
            return paginate(request, [render_firewall(store, f) for f in filtered(request, store.all("firewalls"), "name")], "firewalls")

    async def get_firewall(request: Request):
        with store.lock:
            return JSONResponse({"firewall": render_firewall(store, store.get("firewalls", request.path_params["id"]))})

    async def create_firewall(request: Request):
        data = await body(request)
        with store.lock:
            if not isinstance(data.get("name"), str) or not data["name"]:
                raise invalid("name", "is required")
            store.unique_name("firewalls", data["name"])
            applied = _resources(store, data.get("apply_to"), "apply_to")
            rec = {"id": store.new_id("firewalls"), "name": data["name"], "labels": check_labels(data.get("labels")),
                   "created": iso(store.clock()), "rules": _rules(data.get("rules")), "applied_to": applied, "_": {}}
            store.put("firewalls", rec)
            actions = ([store.action("set_firewall_rules", [(rec["id"], "firewall")])] if rec["rules"] else [])
            actions += _resource_actions(store, "apply_firewall", rec, applied)
            return JSONResponse({"firewall": render_firewall(store, rec),
                                 "actions": [store.render_action(a) for a in actions]}, status_code=201)

    async def update_firewall(request: Request):
        data = await body(request)
        with store.lock:
            rec = store.get("firewalls", request.path_params["id"])
            if "name" in data:
                store.unique_name("firewalls", data["name"], but=rec["id"])
                rec["name"] = data["name"]
            if "labels" in data:
                rec["labels"] = check_labels(data["labels"])
            store.save()
            return JSONResponse({"firewall": render_firewall(store, rec)})

    async def delete_firewall(request: Request):
        with store.lock:
            rec = store.get("firewalls", request.path_params["id"])
            if rec["applied_to"]:
                raise HetznerError("resource_in_use", "firewall must not be in use to be deleted")
            store.remove("firewalls", rec["id"])
        return Response(status_code=204)

    async def firewall_action(request: Request):
        data = await body(request)
        name = request.path_params["action"]
        with store.lock:
            rec = store.get("firewalls", request.path_params["id"])
            if name == "set_rules":
                if not isinstance(data.get("rules"), list):
                    raise invalid("rules", "is required")
                rec["rules"] = _rules(data["rules"])
                actions = [store.action("set_firewall_rules", [(rec["id"], "firewall")])]
                actions += [store.action("apply_firewall", [(rec["id"], "firewall"), (sid, "server")])
                            for sid in firewall_targets(store, rec)]
            elif name == "apply_to_resources":
                new = _resources(store, data.get("apply_to"), "apply_to")
                for r in new:
                    if r in rec["applied_to"]:
                        raise HetznerError("firewall_already_applied", "firewall is already applied to this resource")
                rec["applied_to"] += new
                actions = _resource_actions(store, "apply_firewall", rec, new)
            elif name == "remove_from_resources":
                gone = _resources(store, data.get("remove_from"), "remove_from")
                for r in gone:
                    if r not in rec["applied_to"]:
                        raise HetznerError("firewall_already_removed", "firewall is not applied to this resource")
                rec["applied_to"] = [r for r in rec["applied_to"] if r not in gone]
                actions = _resource_actions(store, "remove_firewall", rec, gone)
            else:
                raise HetznerError("not_found", f"firewall action {name} not found")
            store.save()
            return JSONResponse({"actions": [store.render_action(a) for a in actions]}, status_code=201)

    return [
        Route("/firewalls", list_firewalls, methods=["GET"]),
        Route("/firewalls", create_firewall, methods=["POST"]),
        Route("/firewalls/{id:int}", get_firewall, methods=["GET"]),
        Route("/firewalls/{id:int}", update_firewall, methods=["PUT"]),
        Route("/firewalls/{id:int}", delete_firewall, methods=["DELETE"]),
        Route("/firewalls/{id:int}/actions/{action:str}", firewall_action, methods=["POST"]),
    ]

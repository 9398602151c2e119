"""What every endpoint shares: Hetzner's error envelope, pagination, label rules and selectors, time."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

STATUS_OF = {
    "json_error": 400, "unauthorized": 401, "forbidden": 403, "resource_limit_exceeded": 403, "protected": 403,
    "not_found": 404, "method_not_allowed": 405, "conflict": 409, "uniqueness_error": 409,
    "server_already_attached": 409, "firewall_already_applied": 409, "firewall_already_removed": 409,
    "resource_in_use": 409, "locked": 423, "invalid_input": 422, "server_not_stopped": 422,
    "ip_not_available": 422, "no_subnet_available": 422, "server_not_attached_to_network": 422,
    "firewall_resource_not_found": 422, "networks_overlap": 422, "rate_limit_exceeded": 429,
    "server_error": 500, "bad_gateway": 502, "service_error": 503, "timeout": 504,
}
CODE_OF_STATUS = {500: "server_error", 502: "bad_gateway", 503: "service_error", 504: "timeout"}


class HetznerError(Exception):
    """An API error; rendered as {"error": {code, message, details}} with the matching HTTP status."""

    def __init__(self, code: str, message: str, details: dict | None = None, status: int | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details
        self.status = status or STATUS_OF.get(code, 422)

    def response(self) -> JSONResponse:
        return error_response(self.code, self.message, self.details, self.status)


def error_response(code: str, message: str, details: dict | None = None, status: int | None = None):
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status or STATUS_OF.get(code, 422))


def invalid(field: str, message: str) -> HetznerError:
    return HetznerError("invalid_input", f"invalid input in field '{field}'",
                        {"fields": [{"name": field, "messages": [message]}]})


def not_found(what: str) -> HetznerError:
    return HetznerError("not_found", f"{what} not found")


def iso(ts: float) -> str:
    """RFC 3339 with an explicit offset, as Hetzner writes it."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


async def body(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise HetznerError("json_error", "invalid JSON in request body") from None
    if not isinstance(data, dict):
        raise HetznerError("json_error", "request body must be a JSON object")
    return data


def paginate(request: Request, items: list, key: str, **extra) -> JSONResponse:
    """One page of items under key, with meta.pagination (page, per_page from the query; max 50)."""
    def number(name: str, default: int) -> int:
        try:
            return int(request.query_params.get(name, default))
        except ValueError:
            raise invalid(name, "must be an integer") from None
    page, per_page = max(number("page", 1), 1), number("per_page", 25)
    per_page = 25 if per_page < 1 else min(per_page, 50)
    total = len(items)
    last = max((total + per_page - 1) // per_page, 1)
    chunk = items[(page - 1) * per_page: page * per_page]
    meta = {"page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last else None, "last_page": last, "total_entries": total}
    return JSONResponse({key: chunk, **extra, "meta": {"pagination": meta}})


_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")


def check_labels(labels, field: str = "labels") -> dict:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise invalid(field, "must be an object of string keys and values")
    for k, v in labels.items():
        if not isinstance(v, str) or not _KEY.match(k) or not _VALUE.match(v):
            raise invalid(field, f"invalid label {k!r}={v!r}")
    return dict(labels)


def _split_terms(expr: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in expr:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [t.strip() for t in terms + [cur] if t.strip()]


_K = r"[A-Za-z0-9_./-]+"


def selector(expr: str | None):
    """A predicate over a labels dict for Hetzner's label_selector (k=v, k==v, k!=v, k, !k, in, notin; ',' = AND)."""
    if not expr:
        return lambda labels: True
    tests = []
    for term in _split_terms(expr):
        if m := re.fullmatch(rf"({_K})\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            tests.append(lambda lb, k=key, vs=values, neg=op == "notin": (lb.get(k) in vs) != neg)
        elif m := re.fullmatch(rf"!\s*({_K})", term):
            tests.append(lambda lb, k=m.group(1): k not in lb)
        elif m := re.fullmatch(rf"({_K})\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)", term):
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif re.fullmatch(_K, term):
            tests.append(lambda lb, k=term: k in lb)
        else:
            raise invalid("label_selector", f"cannot parse {term!r}")
    return lambda labels: all(t(labels or {}) for t in tests)


def filtered(request: Request, items: list[dict], *names: str) -> list[dict]:
    """Apply the query's name / label_selector / status style filters (repeatable values OR together)."""
    q = request.query_params
    for name in names:
        wanted = q.getlist(name)
        if wanted:
            items = [i for i in items if str(i.get(name)) in wanted]
    if "label_selector" in q:
        match = selector(q["label_selector"])
        items = [i for i in items if match(i.get("labels") or {})]
    return sorted(items, key=lambda i: i["id"])

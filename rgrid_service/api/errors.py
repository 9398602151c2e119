"""What the service layer refuses, as a sentence and the HTTP status the app answers with.

The service layer raises these instead of HTTPException, so it holds rules, not HTTP. Below them:
how routes document the statuses they answer (`responses`), one error body for all of them."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: str, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.code = code  # machine-readable, only where a caller must act on it (ErrorBody.code)


class Invalid(ServiceError):
    """The request asks for something that cannot be created."""

    status_code = 400


class NotFound(ServiceError):
    """No such thing for this tenant (another tenant's thing is not found either)."""

    status_code = 404


class Conflict(ServiceError):
    """The thing is not in a state that allows this."""

    status_code = 409


class OverQuota(ServiceError):
    """The tenant would go over one of its quotas (policies.quotas); nothing was created."""

    status_code = 429


class Gone(ServiceError):
    """The thing existed and was deleted on purpose (retention): asking again will not bring it back."""

    status_code = 410


class Unavailable(ServiceError):
    """What the request needs is not set up or not reachable from here."""

    status_code = 503


class NotConfigured(ServiceError):
    """This control plane is not set up for the request: asking again will not help (so not 503,
    which clients retry)."""

    status_code = 501


class ProviderFailed(ServiceError):
    """The cloud provider or its engine failed the request; the sentence says what to do."""

    status_code = 424


class Unauthorized(ServiceError):
    """No credential, or one the control plane did not issue."""

    status_code = 401


class Forbidden(ServiceError):
    """A valid credential that may not do this (a given-up worker, another worker's run)."""

    status_code = 403


# --- what the OpenAPI says about them -----------------------------------------------------------


class ErrorBody(BaseModel):
    """Every refusal's body, whatever its status: one sentence that says what to do next."""

    detail: str = Field(description="What went wrong and what to do about it, as a sentence.")
    code: str | None = Field(None, description="Only on the worker API's refusal of a worker the control plane has "
                             "given up (`given_up`): the worker must take itself down. Absent everywhere else.")


# Why each status is answered, for the OpenAPI (a route's own sentence can replace it).
WHY: dict[int, str] = {
    400: "The request cannot be done as asked; the sentence says what to change. Nothing was created.",
    401: "No API key, or not a valid one (`Authorization: Bearer <key>`).",
    403: "This key may not do that: an operator key is needed.",
    404: "No such thing for this API key (another tenant's things are not found either).",
    409: "It is not in a state that allows this now; the sentence says what state it is in.",
    410: "It was deleted on purpose (retention); asking again will not bring it back.",
    422: "The request does not match this schema; the sentence names each field that is wrong.",
    424: "The cloud provider or its engine failed the request; the sentence says what to do.",
    429: "Over one of the tenant's quotas (the sentence says which); nothing was created.",
    501: "This control plane is not set up for this request; asking again will not help.",
    503: "The database (or what the request needs) is not reachable right now; nothing was lost, try again "
         "after Retry-After seconds.",
}

# The statuses every route of a kind can answer, besides its own: any route may find its database away
# (503); a route behind an API key refuses a missing or unknown key (401); an operator route also
# refuses a tenant key (403).
PUBLIC = (503,)
KEYED = (401, 503)
OPERATOR = (401, 403, 503)


def responses(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict]:
    """FastAPI `responses=` entries that document each status with `ErrorBody`, so the OpenAPI lists
    every status a route answers (tests/integration/test_api_contract.py checks it), e.g.
    `responses(404, 409)` on a route of a router made with `responses=responses(*KEYED)`. `why`
    replaces the general reason of a status with the route's own."""
    why = why or {}
    return {status: {"model": ErrorBody, "description": why.get(status, WHY[status])} for status in statuses}


BODY_UNREADABLE = ("The request body cannot be read: send it as UTF-8 JSON with `Content-Type: application/json`, "
                   "then try again.")


def validation_sentence(errors) -> str:
    """FastAPI's validation errors as one sentence with each field that is wrong (its place in the
    request and pydantic's message), so a 422 reads like every other refusal."""
    parts = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'it does not parse')})")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "the request"
        parts.append(f"{where}: {e.get('msg', 'not valid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ("The request does not match the API: " + "; ".join(parts) + more +
            ". Fix it and send it again; GET /openapi.json describes every field.")

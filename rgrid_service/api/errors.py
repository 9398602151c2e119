"""What the service layer refuses, as a sentence and the HTTP status the app answers with.

The service layer raises these instead of HTTPException, so it holds rules, not HTTP."""
from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


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

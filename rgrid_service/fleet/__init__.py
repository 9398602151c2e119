"""The fleet: worker servers made to match a desired set of worker records.

The orchestrator decides (policies.provisioning, policies.billing, policies.health), writes the
decision into the worker records first, and hands the desired set to one provider:

- `process` (fleet/process.py): a worker "server" is a local process group (the fast default);
- `pulumi` (fleet/pulumi.py): the Automation API converges the `worker_pool` stack of
  hcloud.Server resources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..settings import ServiceSettings


@dataclass(frozen=True)
class ServerSpec:
    """One desired worker server."""

    worker_id: str
    server_type: str
    location: str
    image: str = "debian-12"


@dataclass(frozen=True)
class Server:
    """One worker server that exists."""

    worker_id: str
    server_id: str
    status: str  # the provider's word: initializing, running, off, deleting …


@dataclass(frozen=True)
class FleetDiff:
    """What converging to a desired set would do, per worker id."""

    create: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    same: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.delete) + len(self.replace) + len(self.update)


class FleetProvider(Protocol):
    """The one small interface every provider implements. apply() is safe to repeat."""

    name: str

    def observe(self) -> list[Server]:
        """The worker servers that exist now."""

    def apply(self, desired: list[ServerSpec]) -> list[Server]:
        """Create what is missing and delete what is not desired; returns what exists after."""

    def preview(self, desired: list[ServerSpec]) -> FleetDiff:
        """What apply(desired) would change, changing nothing (FleetBusy while an update runs)."""

    def recover(self) -> None:
        """Undo what an interrupted update left behind; the orchestrator calls it before each
        update, a preview never does."""


class FleetBusy(Exception):
    """Another update of the fleet is still running: try again on a later tick."""


QUOTA = "Worker limit reached. Upgrade account or wait for workers to free up."
UNREACHABLE = "Cannot reach cloud provider. Check network connection."
TRANSIENT = "Cloud provider error. Retrying..."

# A failed fleet update is tried again in rounds: TRIES_PER_ROUND tries `fleet_retry_seconds`
# apart, then a longer wait (doubling with each round, up to 16 times) before the next round. The
# "(attempt N/3)" a person sees is the try within the current round.
TRIES_PER_ROUND = 3


def retry_wait(failures: int, base: float) -> float:
    """Seconds to wait before the next try after `failures` failed tries in a row (failures >= 1)."""
    if failures % TRIES_PER_ROUND:
        return base
    return base * 2 ** min(failures // TRIES_PER_ROUND, 4)


def round_attempt(failures: int) -> str:
    """The failed try within its round, as people read it: `2/3`."""
    return f"{(failures - 1) % TRIES_PER_ROUND + 1}/{TRIES_PER_ROUND}"


def explain(error: BaseException, failures: int) -> str:
    """A provider error as the sentence a person sees (in `rgrid local status`, the logs and a
    waiting run's `waiting`); `failures` counts the failed tries in a row, this one included."""
    text = str(error)
    low = text.lower()
    if "resource_limit_exceeded" in low or "limit reached" in low or "quota" in low:
        return QUOTA
    if any(w in low for w in ("connection refused", "no such host", "timeout", "timed out", "deadline exceeded",
                              "unreachable", "connection reset")):
        return f"{UNREACHABLE} (attempt {round_attempt(failures)})"
    first = text.strip().splitlines()[-1][:300] if text.strip() else type(error).__name__
    return f"{TRANSIENT} (attempt {round_attempt(failures)}): {first}"


def make_provider(settings: "ServiceSettings") -> FleetProvider | None:
    """The fleet provider the settings name; None when this process manages no fleet. The
    orchestrator acts through it; the API previews through it."""
    if settings.fleet == "pulumi":
        from .pulumi import PulumiFleet

        return PulumiFleet.from_settings(settings)
    if settings.local_grid_home:
        from .process import ProcessFleet

        return ProcessFleet(Path(settings.local_grid_home), settings)
    return None


TRANSIENT_MARKS = ("service_error", "server_error", "bad_gateway", "rate_limit", "unavailable", "conflict",
                   "locked", " 429", " 500", " 502", " 503", "too many requests", "try again")


def error_kind(error: BaseException) -> str:
    """A provider error's kind, for the metrics: quota, unreachable, transient (the API answered
    5xx, a rate limit or a conflict; a later try may pass) or other. explain() words the same split."""
    low = str(error).lower()
    sentence = explain(error, 1)
    if sentence == QUOTA:
        return "quota"
    if sentence.startswith(UNREACHABLE):
        return "unreachable"
    return "transient" if any(m in low for m in TRANSIENT_MARKS) else "other"

"""What a queued run is waiting for, as one sentence and its parts (what `rgrid run` shows).

In this order, the first that applies:

- dispatched: placed on a worker, not yet claimed: "Starting on worker w-3…"
- quota:      its tenant has as many runs running (or placed) as its limit of concurrent runs
              allows: "Waiting: your limit of 4 concurrent runs is reached"
- provider:   workers are requested and the fleet's latest update failed: the failure in the
              plan's words ("Worker limit reached. …", "Cloud provider error. Retrying...
              (attempt 2/3)", "Cannot reach cloud provider. …")
- booting:    a worker's server exists and it has not joined yet: "Worker w-7 is booting (about
              40 s left)", the estimate being the median boot of recent workers minus the time
              this one has been booting
- provisioning: a worker is requested and its server not made yet: "Provisioning worker… (30 s
              elapsed)", counted from when the fleet asked (the run's provisioning_at, else the
              worker record's creation)
- slot:       otherwise: "Waiting for a free slot (4th of 12 queued)"
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from rgrid_core.states import WorkerState

from ..fleet import QUOTA, TRANSIENT, UNREACHABLE
from .quotas import concurrency_sentence


@dataclass(frozen=True)
class PendingWorker:
    worker_id: str
    state: WorkerState  # requested or booting
    created_at: datetime


@dataclass(frozen=True)
class WaitSnapshot:
    now: datetime
    position: int  # 1 = next in the queue
    queued: int  # queued runs in all
    provisioning_at: datetime | None = None
    dispatched_to: str | None = None
    workers: tuple[PendingWorker, ...] = ()  # requested and booting workers
    boot_seconds: float | None = None  # median boot (record created -> first heartbeat) of recent workers
    fleet_error: str | None = None  # the fleet's latest update failed with this sentence (else None)
    tenant_limit: int | None = None  # its tenant's limit of concurrent runs (None: no limit)
    tenant_busy: int = 0  # its tenant's runs running or placed


@dataclass(frozen=True)
class Waiting:
    kind: str  # dispatched | quota | provider | booting | provisioning | slot
    sentence: str
    position: int
    queued: int
    worker_id: str | None = None
    elapsed_seconds: float | None = None  # provisioning: since the fleet asked; booting: since the record
    seconds_left: float | None = None  # booting: the estimate (None: no boots to go by)
    attempt: str | None = None  # provider: the try within its round, "2/3"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def duration(seconds: float) -> str:
    """`40 s`, `3 min 5 s`, `2 h 10 min`: a wait as a person reads it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def provider_trouble(sentence: str) -> tuple[str, str | None]:
    """The fleet's recorded error sentence (which may carry details for operators) in the plan's
    words for a user, with the try within its round when it has one."""
    found = re.search(r"\(attempt (\d+/\d+)\)", sentence)
    attempt = found.group(1) if found else None
    if sentence.startswith(QUOTA):
        return QUOTA, None
    if sentence.startswith(UNREACHABLE):
        return UNREACHABLE, attempt
    return (f"{TRANSIENT} (attempt {attempt})" if attempt else TRANSIENT), attempt


def waiting(snap: WaitSnapshot) -> Waiting:
    where = dict(position=snap.position, queued=snap.queued)
    if snap.dispatched_to:
        return Waiting("dispatched", f"Starting on worker {snap.dispatched_to}…", worker_id=snap.dispatched_to, **where)
    if snap.tenant_limit is not None and snap.tenant_busy >= snap.tenant_limit:
        return Waiting("quota", concurrency_sentence(snap.tenant_limit), **where)
    requested = sorted((w for w in snap.workers if w.state == WorkerState.REQUESTED), key=lambda w: w.created_at)
    booting = sorted((w for w in snap.workers if w.state == WorkerState.BOOTING), key=lambda w: w.created_at)
    if requested and snap.fleet_error:
        sentence, attempt = provider_trouble(snap.fleet_error)
        return Waiting("provider", sentence, attempt=attempt, **where)
    if booting:
        w = booting[0]
        elapsed = (snap.now - w.created_at).total_seconds()
        left = None if snap.boot_seconds is None else snap.boot_seconds - elapsed
        if left is None:
            sentence = f"Worker {w.worker_id} is booting…"
        elif left >= 1:
            sentence = f"Worker {w.worker_id} is booting (about {duration(left)} left)"
        else:
            sentence = f"Worker {w.worker_id} is booting (any moment now)"
        return Waiting("booting", sentence, worker_id=w.worker_id, elapsed_seconds=elapsed,
                       seconds_left=None if left is None else max(0.0, left), **where)
    if requested:
        since = snap.provisioning_at or requested[0].created_at
        elapsed = max(0.0, (snap.now - since).total_seconds())
        return Waiting("provisioning", f"Provisioning worker… ({duration(elapsed)} elapsed)",
                       worker_id=requested[0].worker_id, elapsed_seconds=elapsed, **where)
    return Waiting("slot", f"Waiting for a free slot ({ordinal(snap.position)} of {snap.queued} queued)", **where)

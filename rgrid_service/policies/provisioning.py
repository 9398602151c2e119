"""How many workers to add: queued runs against the slots that are free or coming.

    available = free slots of active workers + every slot of requested and booting workers
                + slots of running runs estimated to end within the horizon (5 minutes)
    add       = 0                                         if queued <= available
              = ceil((queued - available) / slots per worker)  otherwise
    then bounded so that live workers stay within [min_workers, max_workers].

A running run's end is estimated from the median duration of recently finished runs of the same
script (the caller gathers it); a run with no such history is not counted as ending soon.
Slots of workers still booting count as coming, so nothing is provisioned twice while they boot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from rgrid_core.states import WorkerState

HORIZON = timedelta(minutes=5)


@dataclass(frozen=True)
class FleetWorker:
    worker_id: str
    state: WorkerState
    slots: int
    running: int  # runs running on it now
    assigned: int  # running + queued runs dispatched to it and not yet claimed
    created_at: datetime
    retire_requested: bool = False  # retired by hand: drains, then goes, whatever the billing hour


@dataclass(frozen=True)
class RunningRun:
    started_at: datetime
    expected_seconds: float | None  # median duration of finished runs like it; None: no history


@dataclass(frozen=True)
class FleetSnapshot:
    now: datetime
    queued: int
    running: tuple[RunningRun, ...]
    workers: tuple[FleetWorker, ...]  # live workers: requested, booting, active, draining


@dataclass(frozen=True)
class Bounds:
    min_workers: int
    max_workers: int
    slots_per_worker: int


@dataclass(frozen=True)
class Provisioning:
    add: int
    reason: str


def ending_soon(running: tuple[RunningRun, ...], now: datetime, horizon: timedelta = HORIZON) -> int:
    """How many running runs are expected to end within the horizon."""
    return sum(1 for r in running if r.expected_seconds is not None
               and r.started_at + timedelta(seconds=r.expected_seconds) <= now + horizon)


def provision(snap: FleetSnapshot, bounds: Bounds) -> Provisioning:
    live = len(snap.workers)
    if live < bounds.min_workers:
        return Provisioning(min(bounds.min_workers, bounds.max_workers) - live,
                            f"{live} live workers, below the minimum of {bounds.min_workers}")
    free = sum(max(0, w.slots - w.running) for w in snap.workers if w.state == WorkerState.ACTIVE)
    coming = sum(w.slots for w in snap.workers if w.state in (WorkerState.REQUESTED, WorkerState.BOOTING))
    soon = ending_soon(snap.running, snap.now)
    available = free + coming + soon
    if snap.queued <= available:
        if snap.queued == 0:
            return Provisioning(0, "nothing queued")
        return Provisioning(0, f"{snap.queued} queued fit {free} free, {coming} coming and {soon} ending-soon slots")
    want = math.ceil((snap.queued - available) / bounds.slots_per_worker)
    room = max(0, bounds.max_workers - live)
    add = min(want, room)
    reason = (f"{snap.queued} queued against {free} free, {coming} coming and {soon} ending-soon slots: "
              f"{want} more worker{'s' if want != 1 else ''} wanted")
    if add < want:
        reason += f", {add} allowed by the maximum of {bounds.max_workers}"
    return Provisioning(add, reason)

"""Retiring idle workers at the end of a paid hour.

Hetzner bills every started hour from a server's creation until its deletion. An idle worker
costs nothing more until its next boundary (created_at + k * period), so it is kept until the last
`margin` before that boundary and deleted then; a busy worker is never retired, and the fleet
never shrinks below min_workers. Retiring is two steps: an idle worker in its window first goes
`draining` (it takes no new runs); on a later tick a draining worker that is still idle is
deleted, and one that got work after all goes back to `active`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rgrid_core.states import WorkerState

from .provisioning import FleetWorker


@dataclass(frozen=True)
class Retirement:
    drain: tuple[str, ...] = ()  # idle active workers in their window: take no new runs
    delete: tuple[str, ...] = ()  # draining workers still idle: delete their servers
    keep: tuple[str, ...] = ()  # draining workers that got work: active again
    reasons: tuple[str, ...] = ()


def until_boundary(created_at: datetime, now: datetime, period: timedelta) -> timedelta:
    """Time left in the current paid period of a server created at created_at."""
    used = (now - created_at) % period
    return period - used


def retire(workers: tuple[FleetWorker, ...], now: datetime, period: timedelta, margin: timedelta,
           min_workers: int, queued: int) -> Retirement:
    drain, delete, keep, reasons = [], [], [], []
    staying = sum(1 for w in workers if w.state != WorkerState.DRAINING)
    for w in workers:
        idle = w.assigned == 0
        if w.state == WorkerState.DRAINING:
            if idle and queued == 0:
                delete.append(w.worker_id)
                reasons.append(f"{w.worker_id} idle at the end of its paid hour: deleted")
            else:
                keep.append(w.worker_id)
                reasons.append(f"{w.worker_id} got work while draining: kept for another hour")
                staying += 1
        elif w.state == WorkerState.ACTIVE and idle and queued == 0 and staying > min_workers:
            left = until_boundary(w.created_at, now, period)
            if left <= margin:
                drain.append(w.worker_id)
                staying -= 1
                reasons.append(f"{w.worker_id} idle with {left.total_seconds():.1f} s left of its paid hour: draining")
    return Retirement(tuple(drain), tuple(delete), tuple(keep), tuple(reasons))

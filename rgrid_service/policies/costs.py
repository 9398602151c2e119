"""What a run cost: its share of its worker's paid hours (pure; the rule the docs state).

Hetzner bills every started hour of a server. A worker's paid hours are counted from its record's
creation (as policies/billing counts them): hour k is [created_at + k·period, created_at + (k+1)·period).
A worker with S slots offers S·period slot-seconds per hour. An attempt occupies a slot from its
claim to its end, and pays, for each hour it touches,

    price × (its seconds inside that hour) / (S × period)

so a run that keeps one slot of a 2-slot worker busy for a whole hour pays half that hour. A run's
cost is the sum over its attempts (a lost attempt was paid for too). What the runs of an hour do not
pay is the fleet's idle cost for that hour. An attempt's share depends only on its own times and
its worker, so it is final the moment the attempt ends.

A worker whose price is not known costs nothing here and says why: a local worker (the process
fleet), or a server type missing from the price table. A worker record that never had a server
(a request the provider refused) was never billed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..fleet.prices import PriceTable

LOCAL_PROVIDER = "local"  # the process fleet's workers


@dataclass(frozen=True)
class PricedWorker:
    """What the rule needs of a worker record."""

    worker_id: str
    created_at: datetime
    slots: int
    hourly_eur: float | None  # None: not priced, see why
    why: str | None = None  # "local worker" | "no price for type X" | "no server"
    ended_at: datetime | None = None  # its server's deletion (None: it still exists)


@dataclass(frozen=True)
class Span:
    """One attempt's time on a slot of its worker: claim to end (None: still running)."""

    worker_id: str | None
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class HourCost:
    """One clock hour of the fleet: the paid hours that started in it, what runs paid of them,
    and the rest, which nobody used."""

    hour: datetime  # the clock hour's start (naive UTC)
    spend_eur: float
    runs_eur: float
    idle_eur: float
    workers: int  # priced workers with a paid hour starting in this clock hour


def price_of(provider: str, server_type: str | None, has_server: bool,
             prices: PriceTable) -> tuple[float | None, str | None]:
    """A worker's hourly price, or None and why it has none."""
    if provider == LOCAL_PROVIDER:
        return None, "local worker"
    if not has_server:
        return None, "no server was ever made for it"
    hourly = prices.hourly(server_type or "")
    if hourly is None:
        return None, f"no price for type {server_type or 'unknown'}"
    return hourly, None


def hour_of(created_at: datetime, t: datetime, period: timedelta) -> int:
    """The index of the paid hour of a worker created at created_at that holds instant t."""
    return max(0, math.floor((t - created_at) / period))


def slices(span: Span, created_at: datetime, period: timedelta, now: datetime) -> list[tuple[int, float]]:
    """The span cut at its worker's paid-hour boundaries: (hour index, seconds in that hour)."""
    start, end = max(span.start, created_at), span.end or now
    out: list[tuple[int, float]] = []
    k = hour_of(created_at, start, period)
    while start < end:
        boundary = created_at + (k + 1) * period
        stop = min(end, boundary)
        out.append((k, (stop - start).total_seconds()))
        start, k = stop, k + 1
    return out


def attempt_cost(span: Span, worker: PricedWorker, period: timedelta, now: datetime) -> float:
    """The attempt's share of its worker's paid hours in EUR (0 for a worker without a price)."""
    if worker.hourly_eur is None:
        return 0.0
    capacity = worker.slots * period.total_seconds()
    return sum(worker.hourly_eur * seconds / capacity for _, seconds in slices(span, worker.created_at, period, now))


def paid_hours(worker: PricedWorker, now: datetime, period: timedelta) -> int:
    """How many hours have been billed for the worker: every started one until its deletion."""
    end = worker.ended_at or now
    if end <= worker.created_at:
        return 0
    return math.ceil((end - worker.created_at) / period)


def clock_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def fleet_hours(workers: list[PricedWorker], spans: list[Span], since: datetime, now: datetime,
                period: timedelta) -> list[HourCost]:
    """Per clock hour from since's hour to now's: the priced workers' paid hours that started in
    it (a paid hour counts in the clock hour it began, when Hetzner starts charging it), the runs'
    shares of those paid hours, and the idle rest. The paid hour in progress is whole in spend
    and in idle, since it is already charged. Spans must cover every attempt touching those paid hours."""
    first = clock_hour(since)
    hours = {first + timedelta(hours=i): [0.0, 0.0, set()]
             for i in range(int((clock_hour(now) - first) / timedelta(hours=1)) + 1)}
    by_id = {w.worker_id: w for w in workers if w.hourly_eur is not None}
    started: dict[tuple[str, int], datetime] = {}  # (worker, paid hour) -> its clock hour, if in range
    for w in by_id.values():
        for k in range(paid_hours(w, now, period)):
            h = clock_hour(w.created_at + k * period)
            if h in hours:
                started[(w.worker_id, k)] = h
                hours[h][0] += w.hourly_eur
                hours[h][2].add(w.worker_id)
    for span in spans:
        w = by_id.get(span.worker_id or "")
        if w is None:
            continue
        capacity = w.slots * period.total_seconds()
        for k, seconds in slices(span, w.created_at, period, now):
            h = started.get((w.worker_id, k))
            if h is not None:
                hours[h][1] += w.hourly_eur * seconds / capacity
    # A lost attempt is closed when its loss is declared, which can be after its slot took a new
    # run: then the runs of an hour may sum past its price, and idle shows 0, never less.
    return [HourCost(h, spend, runs, max(0.0, spend - runs), len(ws))
            for h, (spend, runs, ws) in sorted(hours.items())]

"""The cost rule (policies/costs.py), by table: a run pays its slot-seconds of each paid hour of its
worker; the rest of the hour is the fleet's idle cost."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rgrid_service.fleet.prices import DEFAULT_PRICES, Price, PriceTable
from rgrid_service.policies.costs import (
    HourCost,
    PricedWorker,
    Span,
    attempt_cost,
    fleet_hours,
    paid_hours,
    price_of,
    slices,
)

T0 = datetime(2026, 11, 30, 10, 20, 0)  # a worker record created at 10:20
HOUR = timedelta(hours=1)
PRICE = 0.36  # EUR per hour: 0.0001 per second, so a whole-slot-hour of a 2-slot worker is 0.18


def w(slots=2, price=PRICE, created=T0, ended=None, wid="w-1") -> PricedWorker:
    return PricedWorker(wid, created, slots, price, None if price is not None else "local worker", ended)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize("start,end,slots,cost", [
    (0, 60, 2, 0.18),  # one slot of two for the whole paid hour: half its price
    (0, 60, 1, 0.36),  # the only slot for the whole hour: all of it
    (10, 40, 2, 0.09),  # half an hour on one slot of two: a quarter
    (50, 70, 2, 0.06),  # across the boundary: 10 min of hour 0 + 10 min of hour 1, each at the same rate
    (30, 150, 2, 0.36),  # 2 h on one slot of two: half of each of three hours it touches, summed
    (5, 5, 2, 0.0),  # claimed and ended at once: nothing
])
def test_attempt_cost(start, end, slots, cost):
    assert attempt_cost(Span("w-1", at(start), at(end)), w(slots), HOUR, at(500)) == pytest.approx(cost)


def test_a_running_attempt_is_priced_up_to_now():
    assert attempt_cost(Span("w-1", at(0), None), w(), HOUR, at(30)) == pytest.approx(0.09)


def test_a_worker_without_price_costs_nothing():
    assert attempt_cost(Span("w-1", at(0), at(60)), w(price=None), HOUR, at(60)) == 0.0


def test_slices_cut_at_the_workers_paid_hours_not_clock_hours():
    # 10:50 to 11:30 crosses the clock hour at 11:00 but not the worker's boundary at 11:20 ... until 11:20.
    assert slices(Span("w-1", at(30), at(70)), T0, HOUR, at(100)) == [(0, 1800.0), (1, 600.0)]


def test_a_short_billing_period_is_honoured():
    minute = timedelta(minutes=1)
    # 90 s on one slot of two with 1-minute periods at 0.36/period: 0.18 per slot-period, 1.5 periods.
    assert attempt_cost(Span("w-1", at(0), at(1.5)), w(), minute, at(5)) == pytest.approx(0.27)


@pytest.mark.parametrize("provider,server_type,has_server,expected", [
    ("hetzner", "cx23", True, (0.0064, None)),
    ("local", "local", True, (None, "local worker")),
    ("hetzner", "cx99", True, (None, "no price for type cx99")),
    ("hetzner", "cx23", False, (None, "no server was ever made for it")),
])
def test_price_of(provider, server_type, has_server, expected):
    assert price_of(provider, server_type, has_server, DEFAULT_PRICES) == expected


def test_an_operator_table_overrides_the_price():
    table = PriceTable({"cx23": Price("cx23", 1.0, 600.0, "2026-11-30", "test")})
    assert price_of("hetzner", "cx23", True, table) == (1.0, None)


@pytest.mark.parametrize("ended,now,hours", [
    (None, 0.5, 1),  # the hour in progress is already paid
    (None, 60, 1),
    (None, 60.01, 2),
    (90, 500, 2),  # deleted after 1.5 h: two started hours
    (0, 500, 0),
])
def test_paid_hours(ended, now, hours):
    assert paid_hours(w(ended=None if ended is None else at(ended)), at(now), HOUR) == hours


def test_fleet_hours_split_spend_into_runs_and_idle_per_clock_hour():
    # w-1 (2 slots) created 10:20 and deleted 11:50: paid hours start 10:20 and 11:20.
    # w-2 (1 slot) created 11:05, still there at 12:10: paid hours start 11:05 and 12:05.
    # A local worker with a run costs nothing and adds nothing.
    workers = [w(ended=at(90)), w(slots=1, created=at(45), wid="w-2"), w(price=None, wid="w-0")]
    spans = [
        Span("w-1", at(0), at(60)),  # a whole paid hour on one slot: 0.18 in the 10:00 hour
        Span("w-1", at(50), at(70)),  # 10 min in paid hour 0 (0.03, at 10:00) and 10 min in hour 1 (0.03, at 11:00)
        Span("w-2", at(45), at(75)),  # half of w-2's first paid hour, its only slot: 0.18 at 11:00
        Span("w-2", at(105), None),  # running since 12:05 in w-2's second hour, now 12:10: 5 min = 0.03 at 12:00
        Span("w-0", at(0), at(60)),
        Span(None, at(0), at(1)),
    ]
    got = fleet_hours(workers, spans, since=at(-30), now=at(110), period=HOUR)
    want = [
        HourCost(datetime(2026, 11, 30, 9), 0.0, 0.0, 0.0, 0),
        HourCost(datetime(2026, 11, 30, 10), 0.36, 0.21, 0.15, 1),
        HourCost(datetime(2026, 11, 30, 11), 0.72, 0.21, 0.51, 2),
        HourCost(datetime(2026, 11, 30, 12), 0.36, 0.03, 0.33, 1),
    ]
    assert [h.hour for h in got] == [h.hour for h in want]
    for g, e in zip(got, want):
        assert (g.spend_eur, g.runs_eur, g.idle_eur, g.workers) == pytest.approx((e.spend_eur, e.runs_eur, e.idle_eur,
                                                                                  e.workers)), g.hour


def test_the_runs_of_an_hour_and_its_idle_cost_add_up_to_its_price():
    spans = [Span("w-1", at(m), at(m + 7)) for m in range(0, 56, 8)]
    hour = fleet_hours([w(ended=at(60))], spans, since=at(0), now=at(59), period=HOUR)[0]  # 10:00, where it began
    assert hour.runs_eur == pytest.approx(sum(attempt_cost(s, w(), HOUR, at(60)) for s in spans))
    assert hour.runs_eur + hour.idle_eur == pytest.approx(hour.spend_eur)


def test_idle_is_never_negative_when_a_lost_attempt_overlaps_its_slots_next_run():
    spans = [Span("w-1", at(0), at(60)), Span("w-1", at(0), at(60)), Span("w-1", at(30), at(60))]
    hour = fleet_hours([w(ended=at(60))], spans, since=at(0), now=at(59), period=HOUR)[0]  # 10:00, where it began
    assert hour.idle_eur == 0.0 and hour.runs_eur == pytest.approx(0.45)

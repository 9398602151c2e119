"""The fleet's plan (policies.fleetplan) by table: boot timeout, provisioning, billing hour and
retiring by hand together, with the trigger an update after it is recorded under; and the € a
diff costs (fleet.pricechange)."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rgrid_core.states import WorkerState
from rgrid_service.fleet import FleetDiff
from rgrid_service.fleet.pricechange import price_change
from rgrid_service.fleet.prices import DEFAULT_PRICES, Price, PriceTable
from rgrid_service.policies.fleetplan import FleetPolicy, plan
from rgrid_service.policies.provisioning import FleetSnapshot, FleetWorker

NOW = datetime(2026, 11, 30, 2, 0, 0)
A, B, R, D = WorkerState.ACTIVE, WorkerState.BOOTING, WorkerState.REQUESTED, WorkerState.DRAINING
POLICY = FleetPolicy(min_workers=0, max_workers=4, slots_per_worker=2, billing_period=timedelta(minutes=60),
                     retire_margin=timedelta(minutes=3), boot_timeout=timedelta(minutes=10))


def w(i: int, state=A, running=0, age_min=10.0, by_hand=False) -> FleetWorker:
    return FleetWorker(f"w-{i}", state, 2, running, running, NOW - timedelta(minutes=age_min), by_hand)


def snap(queued: int, *workers: FleetWorker) -> FleetSnapshot:
    return FleetSnapshot(NOW, queued, (), tuple(workers))


# queued, workers -> declared dead, added, drained, deleted, kept active, trigger of the update
@pytest.mark.parametrize("queued, workers, dead, add, drain, delete, keep, trigger", [
    (0, [], [], 0, [], [], [], None),  # nothing at all
    (1, [], [], 1, [], [], [], "provisioning"),  # one queued, no worker: one is asked for
    (5, [w(1, running=2)], [], 3, [], [], [], "provisioning"),  # 5 queued, full worker: 3 more (2 slots each)
    (9, [w(1, running=2)], [], 3, [], [], [], "provisioning"),  # capped at max_workers=4
    (1, [w(1, B, age_min=11)], ["w-1"], 1, [], [], [], "replacement"),  # never booted: dead, and replaced
    (1, [w(1, B, age_min=9)], [], 0, [], [], [], None),  # booting in time: its slots are coming
    (0, [w(1, age_min=58)], [], 0, ["w-1"], [], [], None),  # idle near the paid hour's end: drains (no server change)
    (0, [w(1, D, age_min=59)], [], 0, [], ["w-1"], [], "retirement"),  # still idle while draining: deleted
    (2, [w(1, D, age_min=59)], [], 1, [], [], ["w-1"], "provisioning"),  # work came: kept, and a worker added
    (0, [w(1, D, by_hand=True)], [], 0, [], ["w-1"], [], "manual"),  # retired by hand, idle: deleted at any age
    (3, [w(1, D, running=1, by_hand=True), w(2)], [], 1, [], [], [], "provisioning"),  # by hand but busy: waits
    (0, [w(1, D, by_hand=True), w(2, D, age_min=59)], [], 0, [], ["w-2", "w-1"], [], "manual"),  # manual first
    (1, [w(1, B, age_min=11), w(2, D, by_hand=True)], ["w-1"], 1, [], ["w-2"], [], "manual"),
])
def test_plan(queued, workers, dead, add, drain, delete, keep, trigger):
    p = plan(snap(queued, *workers), POLICY)
    assert [d.worker_id for d in p.dead] == dead
    assert p.provisioning.add == add
    assert list(p.retirement.drain) == drain
    assert list(p.delete) == delete
    assert list(p.retirement.keep) == keep
    assert p.trigger == trigger
    # Every action says why, in words.
    assert all(a.reason and " " in a.reason for a in p.actions())


def test_plan_actions_name_their_workers_and_reasons():
    p = plan(snap(3, w(1, B, age_min=11), w(2, D, by_hand=True), w(3, age_min=58)), POLICY)
    acts = {(a.kind, a.workers): a for a in p.actions()}
    assert "did not boot within 10m00s" in acts[("declare_dead", ("w-1",))].reason
    assert acts[("provision", ())].reason.startswith("1 more: 3 queued against 2 free")
    assert acts[("delete", ("w-2",))].trigger == "manual"
    # Runs are queued, so the idle w-3 is not drained even near its boundary.
    assert ("drain", ("w-3",)) not in acts


def test_a_worker_that_never_booted_does_not_count_as_coming():
    # Its two slots would have covered the two queued runs; declared dead, it is replaced in the same plan.
    p = plan(snap(2, w(1, B, age_min=11)), POLICY)
    assert p.provisioning.add == 1 and p.trigger == "replacement"


# ---------------------------------------------------------------- € of a diff


TABLE = PriceTable({"cx23": Price("cx23", 0.0064, 3.99, "2026-04-15", "t"),
                    "cx33": Price("cx33", 0.0104, 6.49, "2026-04-15", "t")})


@pytest.mark.parametrize("diff, existing, types, now, hourly, monthly, missing", [
    (FleetDiff(), [], {}, 0.0, 0.0, 0.0, 0),
    (FleetDiff(create=("w-3",)), ["w-1"], {"w-1": "cx23", "w-3": "cx23"}, 0.0064, 0.0064, 3.99, 0),
    (FleetDiff(create=("w-3", "w-4")), [], {"w-3": "cx23", "w-4": "cx33"}, 0.0, 0.0168, 10.48, 0),
    (FleetDiff(delete=("w-1",)), ["w-1", "w-2"], {"w-1": "cx33", "w-2": "cx23"}, 0.0168, -0.0104, -6.49, 0),
    (FleetDiff(replace=("w-1",)), ["w-1"], {"w-1": "cx23"}, 0.0064, 0.0, 0.0, 0),  # same type after
    (FleetDiff(create=("w-2",), delete=("w-1",)), ["w-1"], {"w-1": "cx33", "w-2": "cx23"}, 0.0104, -0.004, -2.5, 0),
    # A type the table lacks is left out and named, never a crash.
    (FleetDiff(create=("w-2", "w-3")), ["w-1"], {"w-1": "local", "w-2": "local", "w-3": "cx23"}, 0.0, 0.0064, 3.99, 1),
    (FleetDiff(create=("w-9",)), [], {}, 0.0, 0.0, 0.0, 1),  # no type known at all
])
def test_price_change(diff, existing, types, now, hourly, monthly, missing):
    cost = price_change(diff, existing, types, TABLE)
    assert cost.now_hourly_eur == pytest.approx(now)
    assert cost.hourly_eur == pytest.approx(hourly)
    assert cost.monthly_eur == pytest.approx(monthly)
    assert len(cost.missing) == missing
    assert cost.as_of == (("2026-04-15",) if any(t in TABLE.prices for t in types.values()) else ())
    for sentence in cost.missing:
        assert "price table has no price for server type" in sentence and "RGRID_PRICE_TABLE" in sentence


def test_the_default_prices_cover_the_default_server_type():
    from rgrid_service.settings import ServiceSettings

    cost = price_change(FleetDiff(create=("w-1",)), [], {"w-1": ServiceSettings().server_type}, DEFAULT_PRICES)
    assert cost.missing == () and cost.hourly_eur > 0 and cost.as_of

"""Provisioning and billing-hour policies, by table; the worker state table."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rgrid_core.states import WorkerState, can_move
from rgrid_service.policies.billing import retire, until_boundary
from rgrid_service.policies.provisioning import Bounds, FleetSnapshot, FleetWorker, RunningRun, provision

NOW = datetime(2026, 11, 29, 12, 0, 0)
A, B, R, D = WorkerState.ACTIVE, WorkerState.BOOTING, WorkerState.REQUESTED, WorkerState.DRAINING


def worker(i: int, state=A, running=0, assigned=None, age_min=10.0, slots=2) -> FleetWorker:
    return FleetWorker(f"w-{i}", state, slots, running, running if assigned is None else assigned,
                       NOW - timedelta(minutes=age_min))


def snap(queued: int, workers=(), running=()) -> FleetSnapshot:
    return FleetSnapshot(NOW, queued, tuple(running), tuple(workers))


BOUNDS = Bounds(min_workers=0, max_workers=10, slots_per_worker=2)


@pytest.mark.parametrize("queued, workers, running, add", [
    (0, [], [], 0),  # nothing queued
    (3, [worker(1), worker(2)], [], 0),  # 4 free slots suffice
    (5, [worker(1), worker(2)], [], 1),  # one more worker for the fifth
    (20, [], [], 10),  # 20 queued, 2 slots each, max 10: exactly 10
    (30, [], [], 10),  # capped by max_workers
    (20, [worker(i, R) for i in range(1, 11)], [], 0),  # 10 coming: nothing twice while they boot
    (20, [worker(i, B) for i in range(1, 6)], [], 5),  # 5 booting = 10 coming slots; 5 more for the rest
    (4, [worker(1, running=2), worker(2, running=2)],  # full, but both runs end within 5 minutes
     [RunningRun(NOW - timedelta(minutes=1), 90)] * 4, 0),
    (4, [worker(1, running=2), worker(2, running=2)],  # full, runs with no history: 2 more
     [RunningRun(NOW - timedelta(minutes=1), None)] * 4, 2),
    (4, [worker(1, running=2), worker(2, running=2)],  # full, runs expected to take an hour: 2 more
     [RunningRun(NOW - timedelta(minutes=1), 3600)] * 4, 2),
    (1, [worker(1, D)], [], 1),  # a draining worker's slots do not count
])
def test_provisioning(queued, workers, running, add):
    assert provision(snap(queued, workers, running), BOUNDS).add == add


def test_provisioning_keeps_min_workers_and_says_why():
    decision = provision(snap(0, [worker(1)]), Bounds(3, 10, 2))
    assert decision.add == 2 and "below the minimum of 3" in decision.reason
    capped = provision(snap(30, []), BOUNDS)
    assert "15 more workers wanted, 10 allowed by the maximum of 10" in capped.reason


PERIOD, MARGIN = timedelta(minutes=60), timedelta(minutes=3)


@pytest.mark.parametrize("age_min, running, queued, drained", [
    (58, 0, 0, True),  # idle, 2 minutes before its boundary
    (118.5, 0, 0, True),  # second hour, 1.5 minutes left
    (50, 0, 0, False),  # idle, but 10 minutes of paid time left
    (58, 1, 0, False),  # busy: never
    (58, 0, 5, False),  # runs are waiting: keep it
    (60.5, 0, 0, False),  # just past a boundary: a new hour has begun, kept until its end
])
def test_billing_hour(age_min, running, queued, drained):
    plan = retire((worker(1, running=running, age_min=age_min),), NOW, PERIOD, MARGIN, 0, queued)
    assert (plan.drain == ("w-1",)) is drained


def test_a_draining_worker_is_deleted_if_still_idle_and_kept_if_it_got_work():
    plan = retire((worker(1, D), worker(2, D, running=1)), NOW, PERIOD, MARGIN, 0, 0)
    assert plan.delete == ("w-1",) and plan.keep == ("w-2",)


def test_billing_never_goes_below_min_workers():
    idle = tuple(worker(i, age_min=58) for i in range(1, 4))
    assert retire(idle, NOW, PERIOD, MARGIN, 2, 0).drain == ("w-1",)


def test_until_boundary():
    assert until_boundary(NOW - timedelta(minutes=61), NOW, PERIOD) == timedelta(minutes=59)


@pytest.mark.parametrize("src, dst, ok", [
    ("requested", "booting", True), ("booting", "active", True), ("active", "draining", True),
    ("draining", "deleting", True), ("deleting", "deleted", True), ("active", "dead", True),
    ("dead", "active", False), ("deleted", "active", False), ("deleting", "active", False),
    ("requested", "draining", False),
])
def test_worker_transitions(src, dst, ok):
    assert can_move(src, dst) is ok

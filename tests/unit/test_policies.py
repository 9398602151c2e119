"""The pure decision functions, by table: placement, the dead-worker rule, orphan outcomes."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest

from rgrid_service.policies.health import WorkerBeat, dead_workers, excused_until, heard_during, hearing_at_start
from rgrid_service.policies.orphans import Orphan, orphan_outcome
from rgrid_service.policies.placement import Queued, WorkerLoad, place

T0 = datetime(2026, 11, 28, 12, 0, 0)


def W(wid, busy=0, recent=0, slots=2):
    return WorkerLoad(wid, slots, busy, recent)


def Q(n, batch=None, parallel=None):
    return [Queued(f"e{i}", batch, parallel) for i in range(n)]


@pytest.mark.parametrize(
    "queued, workers, prefetch, expected",
    [
        # Idle workers: one each before anyone gets a second (even spread).
        (Q(3), [W("w-1"), W("w-2"), W("w-3")], 0, {"w-1": 1, "w-2": 1, "w-3": 1}),
        (Q(6), [W("w-1"), W("w-2"), W("w-3")], 0, {"w-1": 2, "w-2": 2, "w-3": 2}),
        # Never above the slots without prefetch.
        (Q(10), [W("w-1"), W("w-2"), W("w-3")], 0, {"w-1": 2, "w-2": 2, "w-3": 2}),
        # Prefetch: one extra per worker, only once all are full.
        (Q(10), [W("w-1"), W("w-2"), W("w-3")], 1, {"w-1": 3, "w-2": 3, "w-3": 3}),
        # Free slots first: the busy worker gets nothing while another has room.
        (Q(2), [W("w-1", busy=2), W("w-2", busy=0)], 1, {"w-2": 2}),
        # Ties on load go to the worker given the fewest runs recently.
        (Q(1), [W("w-1", recent=5), W("w-2", recent=1)], 0, {"w-2": 1}),
        # Lower busy share wins over fewer recent placements.
        (Q(1), [W("w-1", busy=1, recent=0), W("w-2", busy=0, recent=9)], 0, {"w-2": 1}),
        # Bigger workers take proportionally more.
        (Q(6), [W("big", slots=4), W("small", slots=2)], 0, {"big": 4, "small": 2}),
        # Nothing to place on: no decisions.
        (Q(3), [], 0, {}),
        (Q(3), [W("w-1", busy=2)], 0, {}),
    ],
)
def test_place(queued, workers, prefetch, expected):
    decisions = place(queued, workers, {}, prefetch=prefetch)
    assert Counter(w for _, w in decisions) == expected
    # Queue order is kept: the first runs placed are the oldest.
    assert [e for e, _ in decisions] == [q.execution_id for q in queued][: len(decisions)]


def test_batch_parallel_limit_counts_what_is_already_busy():
    queued = Q(5, batch="b-1", parallel=2) + [Queued("other")]
    decisions = place(queued, [W("w-1"), W("w-2")], {"b-1": 1})
    placed = [e for e, _ in decisions]
    assert placed == ["e0", "other"]  # one more of the batch (1 busy + 1 = 2), then the next job


@pytest.mark.parametrize(
    "last_beat, registered, ray_alive, dead",
    [
        (T0 - timedelta(seconds=30), T0 - timedelta(hours=1), True, False),
        (T0 - timedelta(seconds=120), T0 - timedelta(hours=1), True, False),  # exactly dead_after: alive
        (T0 - timedelta(seconds=121), T0 - timedelta(hours=1), True, True),
        (None, T0 - timedelta(seconds=60), None, False),  # registered, no beat yet, within grace
        (None, T0 - timedelta(seconds=300), None, True),  # never beat since registration
        (T0, T0, False, True),  # Ray says its node is dead: sooner than heartbeats
        (T0 - timedelta(seconds=500), T0 - timedelta(hours=1), None, True),  # Ray doesn't know it
    ],
)
def test_dead_worker_rule(last_beat, registered, ray_alive, dead):
    found = dead_workers([WorkerBeat("w-3", last_beat, registered, ray_alive)], T0, timedelta(minutes=2))
    assert bool(found) is dead
    if found:
        assert found[0].worker_id == "w-3"
        assert ("Ray reported" in found[0].reason) is (ray_alive is False)


def test_dead_worker_reason_names_the_last_heartbeat():
    [d] = dead_workers([WorkerBeat("w-3", T0 - timedelta(minutes=2, seconds=5), T0 - timedelta(hours=1))],
                       T0, timedelta(minutes=2))
    assert d.reason == "no heartbeat from w-3 since 11:57:55 (2m05s)"


# The database was away until `back` (the orchestrator's first read after a failed stretch).
# dead_after is 2 minutes; T0 is now.
@pytest.mark.parametrize(
    "last_beat, back, dead",
    [
        (T0 - timedelta(minutes=10), T0 - timedelta(seconds=30), False),  # silent through the outage only
        (T0 - timedelta(minutes=10), T0 - timedelta(seconds=120), False),  # dead_after since it came back
        (T0 - timedelta(minutes=10), T0 - timedelta(seconds=121), True),  # silent long after it came back
        (T0 - timedelta(seconds=121), T0 - timedelta(hours=1), True),  # an old outage changes nothing
        (T0 - timedelta(seconds=30), T0 - timedelta(seconds=60), False),  # beat after it came back
        (T0 - timedelta(minutes=10), None, True),  # never unreachable: the plain rule
        (T0 - timedelta(minutes=10), T0, False),  # the first read of a fresh orchestrator
    ],
)
def test_silence_during_a_database_outage_does_not_count(last_beat, back, dead):
    found = dead_workers([WorkerBeat("w-3", last_beat, T0 - timedelta(hours=2), True)], T0, timedelta(minutes=2), back)
    assert bool(found) is dead


def test_ray_reporting_a_node_dead_is_not_excused_by_an_outage():
    found = dead_workers([WorkerBeat("w-3", T0, T0, False)], T0, timedelta(minutes=2), reachable_since=T0)
    assert [d.reason for d in found] == ["Ray reported node of w-3 dead"]


def test_dead_worker_reason_after_an_outage_says_when_the_control_plane_heard_again():
    [d] = dead_workers([WorkerBeat("w-3", T0 - timedelta(minutes=10), T0 - timedelta(hours=1))], T0,
                       timedelta(minutes=2), T0 - timedelta(minutes=3))
    assert d.reason == ("no heartbeat from w-3 since 11:50:00 (10m00s); 3m00s of that after the control plane "
                        "could hear its workers again at 11:57:00")


@pytest.mark.parametrize(
    "deaf_for, excused_to",
    [
        (timedelta(minutes=3), T0),  # within the cap: excused up to now
        (timedelta(minutes=10), T0),  # exactly the cap
        (timedelta(hours=1), T0 - timedelta(minutes=50)),  # past it: silence counts again from deaf + cap
    ],
)
def test_an_outage_excuses_silence_for_at_most_the_cap(deaf_for, excused_to):
    assert excused_until(T0 - deaf_for, T0, timedelta(minutes=10)) == excused_to


def test_a_probe_that_fails_forever_cannot_keep_a_silent_worker_alive():
    dead_after, cap = timedelta(minutes=2), timedelta(minutes=10)
    probe_down = T0 - timedelta(hours=1)
    silent = WorkerBeat("w-3", probe_down, T0 - timedelta(hours=2), True)
    assert dead_workers([silent], T0, dead_after, excused_until(probe_down, T0, cap))


@pytest.mark.parametrize(
    "freshest, excused",
    [
        (None, False),  # no heartbeat since the probe failed
        (T0 - timedelta(minutes=6), False),  # the last one before it failed
        (T0 - timedelta(minutes=4), True),  # one landed after: the workers reach the control plane
    ],
)
def test_heartbeats_landing_while_the_probe_fails_mean_the_control_plane_hears(freshest, excused):
    assert heard_during(T0 - timedelta(minutes=5), freshest) is excused


@pytest.mark.parametrize(
    "freshest, expected",
    [
        (T0 - timedelta(seconds=20), (None, None)),  # the fleet was being heard: nothing to excuse
        (T0 - timedelta(minutes=5), (T0 - timedelta(minutes=5), T0)),  # nobody heard lately: excused
        (T0 - timedelta(hours=1), (T0 - timedelta(hours=1), T0 - timedelta(minutes=50))),  # within the cap
        (None, (None, None)),  # nobody ever beat: no one to excuse, a crash loop resets nothing
    ],
)
def test_a_fresh_orchestrator_counts_from_the_freshest_heartbeat(freshest, expected):
    assert hearing_at_start(freshest, T0, timedelta(minutes=2), timedelta(minutes=10)) == expected


def test_a_crash_looping_orchestrator_still_declares_a_silent_worker_dead():
    """Each child starts afresh; the fleet's other workers beat, so the silent one is not excused."""
    dead_after = timedelta(minutes=2)
    _, since = hearing_at_start(T0 - timedelta(seconds=10), T0, dead_after, timedelta(minutes=10))
    beats = [WorkerBeat("w-1", T0 - timedelta(seconds=10), T0 - timedelta(hours=1), True),
             WorkerBeat("w-3", T0 - timedelta(minutes=5), T0 - timedelta(hours=1), True)]
    assert [d.worker_id for d in dead_workers(beats, T0, dead_after, since)] == ["w-3"]


@pytest.mark.parametrize(
    "back, cutoff",
    [
        (None, T0 - timedelta(seconds=7)),  # never unreachable: leases older than the timeout
        (T0 - timedelta(hours=1), T0 - timedelta(seconds=7)),  # long back
        (T0 - timedelta(seconds=8), T0 - timedelta(seconds=7)),
        (T0 - timedelta(seconds=7), None),  # back exactly the timeout ago: nobody has had longer
        (T0 - timedelta(seconds=3), None),  # runners have not had the time to renew yet
    ],
)
def test_lease_cutoff_after_a_database_outage(back, cutoff):
    from rgrid_service.policies.health import lease_cutoff

    assert lease_cutoff(T0, timedelta(seconds=7), back) == cutoff


@pytest.mark.parametrize("attempt, max_attempts, outcome", [(1, 3, "queued"), (2, 3, "queued"), (3, 3, "lost"),
                                                            (1, 1, "lost")])
def test_orphan_outcome(attempt, max_attempts, outcome):
    assert orphan_outcome(Orphan("e", attempt, max_attempts)) == outcome


def test_a_run_waiting_behind_full_slots_moves_to_a_free_slot():
    from rgrid_service.policies.placement import Waiting, steal

    workers = [W("w-1", busy=4), W("w-2", busy=0)]  # w-1: 2 running + 2 handed ahead
    moves = steal([Waiting("a", "w-1"), Waiting("b", "w-1")], workers)
    assert moves == [("a", "w-2"), ("b", "w-2")]


def test_stealing_only_fills_free_slots_never_room_ahead():
    from rgrid_service.policies.placement import Waiting, steal

    # w-2 is full (2 of 2) though it could take runs ahead: nothing moves there.
    assert steal([Waiting("a", "w-1")], [W("w-1", busy=3), W("w-2", busy=2)]) == []
    # One free slot: only the oldest waiting run moves.
    assert steal([Waiting("a", "w-1"), Waiting("b", "w-1")], [W("w-1", busy=4), W("w-2", busy=1)]) == [("a", "w-2")]


def test_queued_runs_take_free_slots_before_waiting_runs_move():
    from rgrid_service.policies.placement import Waiting, steal

    workers = [W("w-1", busy=3), W("w-2", busy=0)]
    placed = place(Q(2), workers, {}, prefetch=2)
    assert placed == [("e0", "w-2"), ("e1", "w-2")]
    assert steal([Waiting("a", "w-1")], workers, placed) == []


def test_a_waiting_run_never_moves_to_its_own_worker():
    from rgrid_service.policies.placement import Waiting, steal

    assert steal([Waiting("a", "w-1")], [W("w-1", busy=1)]) == []

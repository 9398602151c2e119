"""The dispatch loop (orchestrator.dispatch.Dispatcher.run): it ticks when the queue's bell rings,
rings close together make one tick, and with no ring it ticks on the safety interval: the dispatch
interval while runs wait for a slot, the idle interval when none does. The ticks are recorded, not
run (dispatch_tick itself is exercised on the real grid)."""
from __future__ import annotations

import threading
import time

from rgrid_service.orchestrator.dispatch import Dispatcher
from rgrid_service.settings import ServiceSettings
from tests.conftest import wait_until


class RecordingDispatcher(Dispatcher):
    def __init__(self, settings, waiting: bool, quiet: bool = False):
        super().__init__(settings, engine=None)
        self.ticks: list[bool] = []  # each tick's `full`
        self.still_waiting, self.stays_quiet = waiting, quiet

    def dispatch_tick(self, full: bool = True) -> int:
        if full:
            self._last_full = time.monotonic()
        self.ticks.append(full)
        self.waiting, self.quiet = self.still_waiting, self.stays_quiet
        return 0


def looping(settings: ServiceSettings, waiting: bool, quiet: bool = False):
    d = RecordingDispatcher(settings, waiting, quiet)
    wake, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=d.run, args=(wake, stop), daemon=True)
    thread.start()
    wait_until(lambda: d.ticks, 10, "the first tick")  # every loop starts with one
    return d, wake, stop, thread


def settings(**kw) -> ServiceSettings:
    return ServiceSettings(_env_file=None, **kw)


def test_a_ring_ticks_long_before_the_safety_tick():
    d, wake, stop, thread = looping(settings(dispatch_interval_seconds=60, dispatch_idle_interval_seconds=60,
                                             dispatch_min_gap_seconds=0), waiting=False)
    try:
        for n in (2, 3):
            wake.set()
            wait_until(lambda: len(d.ticks) >= n, 10, f"tick {n} after a ring")
        time.sleep(0.3)
        assert len(d.ticks) == 3  # nothing else ticks: the safety tick is a minute away
        assert d.ticks[1:] == [False, False]  # a ring's tick within the dispatch interval reuses what it read
    finally:
        stop.set()
        wake.set()
        thread.join(5)
    assert not thread.is_alive()


def test_rings_close_together_make_one_tick_per_min_gap():
    d, wake, stop, thread = looping(settings(dispatch_interval_seconds=60, dispatch_idle_interval_seconds=60,
                                             dispatch_min_gap_seconds=1.0), waiting=False)
    try:
        ringing_until = time.monotonic() + 1.5
        while time.monotonic() < ringing_until:  # ~150 rings in 1.5 s
            wake.set()
            time.sleep(0.01)
        wait_until(lambda: len(d.ticks) >= 2, 10, "a tick after the rings")
        time.sleep(1.2)
        # The first tick, then at most one per second of ringing plus the last ring's.
        assert 2 <= len(d.ticks) <= 4, d.ticks
    finally:
        stop.set()
        wake.set()
        thread.join(5)


def test_with_no_ring_it_ticks_on_the_dispatch_interval_while_runs_wait_and_the_idle_interval_when_none_does():
    d, wake, stop, thread = looping(settings(dispatch_interval_seconds=0.05, dispatch_idle_interval_seconds=60),
                                    waiting=True)
    try:
        wait_until(lambda: len(d.ticks) >= 5, 10, "safety ticks while runs wait")
        assert all(d.ticks)  # each a dispatch interval apart: full ticks
        d.still_waiting = False
        wait_until(lambda: not d.waiting, 10, "a tick that finds nothing waiting")
        settled = len(d.ticks)
        time.sleep(0.5)  # ten dispatch intervals: idle, it does not tick
        assert len(d.ticks) == settled
        d.still_waiting = True
        wake.set()  # a run queued
        wait_until(lambda: len(d.ticks) >= settled + 4, 10, "safety ticks once runs wait again")
    finally:
        stop.set()
        wake.set()
        thread.join(5)


# dispatch_tick's order: a full tick sends with the node list it holds before it asks Ray (the
# first ring after a quiet spell is a full tick), and places again with Ray's fresh list when that
# differs for a worker it just sent to.

from rgrid_service.orchestrator import dispatch as dispatch_module  # noqa: E402
from rgrid_service.orchestrator.dispatch import moved_off  # noqa: E402
from rgrid_service.orchestrator.snapshot import RayNode  # noqa: E402


class OrderedDispatcher(Dispatcher):
    """Records each step of a tick; sends every queued run to the first worker of the list it
    places with, as placement would with one worker."""

    def __init__(self, queued: list[str]):
        super().__init__(settings(), engine=None)
        self.steps: list[tuple] = []
        self.calls: list[tuple] = []  # every call on the runners with its arguments
        self.queued = list(queued)

    def _call(self, method: str, *args):
        self.steps.append((method,))
        self.calls.append((method, *args))
        return []

    def _place_and_send(self, nodes):
        self.steps.append(("place", dict(nodes)))
        live = [w for w, n in sorted(nodes.items()) if n.alive]
        sent = [(e, live[0]) for e in self.queued] if live else []
        self.queued = [e for e in self.queued if not live]
        return sent


def ray_answers(monkeypatch, steps: list, *answers: dict):
    answers_left = list(answers)

    def nodes():
        steps.append(("ray nodes",))
        return answers_left.pop(0)

    monkeypatch.setattr(dispatch_module, "ray_worker_nodes", nodes)


W1 = RayNode("node-1", True, 2)
W2 = RayNode("node-2", True, 2)


def test_a_full_tick_sends_with_the_nodes_it_holds_before_asking_ray(monkeypatch):
    d = OrderedDispatcher(["ex-1"])
    d._nodes, d._nodes_at = {"w1": W1}, time.monotonic() - 10
    ray_answers(monkeypatch, d.steps, {"w1": W1})
    released = []
    monkeypatch.setattr(dispatch_module.lifecycle, "release_dispatches", lambda engine, ids: released.append(ids))
    assert d.dispatch_tick(full=True) == 1
    assert d.steps == [("place", {"w1": W1}), ("reap",), ("ray nodes",)]
    assert released == []  # Ray's list is the one it held


def test_the_first_tick_asks_ray_first(monkeypatch):
    d = OrderedDispatcher(["ex-1"])
    ray_answers(monkeypatch, d.steps, {"w1": W1})
    assert d.dispatch_tick(full=True) == 1
    assert d.steps == [("ray nodes",), ("prepare",), ("reap",), ("place", {"w1": W1})]
    assert ("prepare", [("node-1", 2)]) in d.calls  # the new node's runner is made before its first run


def test_runs_sent_to_a_node_ray_no_longer_has_go_back_and_are_placed_with_the_fresh_list(monkeypatch):
    d = OrderedDispatcher(["ex-1", "ex-2"])
    d._nodes, d._nodes_at = {"w1": W1}, time.monotonic() - 10
    fresh = {"w1": RayNode("node-1", False, 2), "w2": W2}  # w1's node died, w2 joined
    ray_answers(monkeypatch, d.steps, fresh)
    released = []

    def release(engine, ids):
        released.append(list(ids))
        d.queued.extend(ids)  # back in the queue, as the database would have them

    monkeypatch.setattr(dispatch_module.lifecycle, "release_dispatches", release)
    assert d.dispatch_tick(full=True) == 2
    assert released == [["ex-1", "ex-2"]]
    assert d.steps == [("place", {"w1": W1}), ("reap",), ("ray nodes",), ("prepare",), ("place", fresh)]
    # The runners: w2's made, w1's (its node dead) let go, as the runners are told the live nodes.
    assert ("prepare", [("node-2", 2)]) in d.calls


def test_a_tick_between_full_ones_does_not_ask_ray(monkeypatch):
    d = OrderedDispatcher(["ex-1"])
    d._nodes, d._nodes_at = {"w1": W1}, time.monotonic()
    ray_answers(monkeypatch, d.steps)
    assert d.dispatch_tick(full=False) == 1
    assert d.steps == [("place", {"w1": W1})]


def test_moved_off():
    assert not moved_off(W1, W1)
    assert not moved_off(W1, RayNode("node-1", True, 4))  # same node, other slots: the task still starts
    assert moved_off(W1, None)
    assert moved_off(W1, RayNode("node-1", False, 2))
    assert moved_off(W1, RayNode("node-9", True, 2))  # restarted under another id
    assert not moved_off(None, W1)


def test_a_ring_right_after_a_safety_tick_is_not_held_back_by_the_min_gap():
    """The min gap joins a burst of rings into one tick; a safety tick is no burst, so the first ring
    after one ticks at once rather than a min gap (here 30 s) later."""
    d, wake, stop, thread = looping(settings(dispatch_interval_seconds=60, dispatch_idle_interval_seconds=60,
                                             dispatch_min_gap_seconds=30), waiting=False)
    try:  # the loop's first tick was a safety tick, a moment ago
        wake.set()
        wait_until(lambda: len(d.ticks) >= 2, 10, "the ring's tick")
        wake.set()  # a second ring within the min gap of the first waits for it
        time.sleep(0.5)
        assert len(d.ticks) == 2
    finally:
        stop.set()
        wake.set()
        thread.join(5)


def test_a_ring_after_a_tick_that_left_the_grid_quiet_is_not_held_back_by_the_min_gap():
    """A tick that found room and nothing to do (the last run ended, nothing queued) leaves no burst
    to gather: the next ring ticks at once, not a min gap (here 30 s) after the last rung tick.
    While runs wait, rings within the min gap still make one tick."""
    d, wake, stop, thread = looping(settings(dispatch_interval_seconds=60, dispatch_idle_interval_seconds=60,
                                             dispatch_min_gap_seconds=30), waiting=False, quiet=True)
    try:
        for n in (2, 3, 4):
            wake.set()
            wait_until(lambda: len(d.ticks) >= n, 10, f"tick {n} after a ring")
        d.stays_quiet, d.still_waiting = False, True
        wake.set()
        wait_until(lambda: len(d.ticks) >= 5, 10, "the ring's tick")
        wake.set()  # the last tick left runs waiting: this ring waits out the min gap
        time.sleep(0.5)
        assert len(d.ticks) == 5
    finally:
        stop.set()
        wake.set()
        thread.join(5)


def test_runs_whose_runner_died_with_their_call_go_back_to_the_queue_at_once(monkeypatch):
    """A node's runner holds the runs running there and those queued behind them: when its
    process dies, the queued ones never started and must not wait for redispatch_after."""

    class Reaping(Dispatcher):
        def _call(self, method: str, *args):
            assert method == "reap"
            return [("ex-done", "succeeded", False), ("ex-lost", "runner error: ActorDiedError: …", True),
                    ("ex-other", "runner error: RayTaskError: …", False)]

    released = []
    monkeypatch.setattr(dispatch_module.lifecycle, "release_dispatches", lambda engine, ids: released.append(list(ids)))
    Reaping(settings(), engine=None)._reap()
    assert released == [["ex-lost"]]

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
    def __init__(self, settings, waiting: bool):
        super().__init__(settings, engine=None)
        self.ticks: list[bool] = []  # each tick's `full`
        self.still_waiting = waiting

    def dispatch_tick(self, full: bool = True) -> int:
        if full:
            self._last_full = time.monotonic()
        self.ticks.append(full)
        self.waiting = self.still_waiting
        return 0


def looping(settings: ServiceSettings, waiting: bool):
    d = RecordingDispatcher(settings, waiting)
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

"""rgrid_runner.deadlines: one thread keeps every run's wall clock; a cancelled deadline never
calls, a passed one calls once, in time order, and a slow call holds up no other deadline."""
from __future__ import annotations

import threading
import time

from rgrid_runner.deadlines import Deadlines


def _recorder():
    called: list[str] = []
    done = threading.Event()

    def make(name: str, block: threading.Event | None = None):
        def fn():
            called.append(name)
            done.set()
            if block is not None:
                block.wait(5)
        return fn

    return called, done, make


def test_passed_deadlines_call_once_in_time_order_and_cancelled_ones_never():
    deadlines = Deadlines()
    called, _done, make = _recorder()
    late = deadlines.after(0.3, make("late"))
    deadlines.after(0.1, make("early"))  # sooner than the one the thread sleeps for
    cancelled = deadlines.after(0.05, make("cancelled"))
    cancelled.cancel()
    time.sleep(0.6)
    assert called == ["early", "late"]
    late.cancel()  # after it passed: nothing happens, nothing is called again
    time.sleep(0.1)
    assert called == ["early", "late"]


def test_a_slow_call_holds_up_no_other_deadline():
    deadlines = Deadlines()
    called, _done, make = _recorder()
    held = threading.Event()
    deadlines.after(0.05, make("slow", block=held))  # a kill waiting on the Docker engine
    deadlines.after(0.1, make("next"))
    time.sleep(0.4)
    held.set()
    assert called == ["slow", "next"]


def test_many_runs_share_one_thread_and_cancelled_entries_do_not_pile_up():
    deadlines = Deadlines()
    called, _done, make = _recorder()
    before = threading.active_count()
    for i in range(2000):
        deadlines.after(3600, make(f"run {i}")).cancel()  # every script ended before its timeout
    assert threading.active_count() <= before + 1
    assert len(deadlines._heap) <= 1
    assert called == []

"""Wall-clock deadlines for every run of a process, kept by one thread.

Each run's timeout had a threading.Timer of its own: a thread started per run, which cost 0.1 ms
of CPU and, on a busy machine, up to a millisecond of the run's wall time before the new thread
had been scheduled (Thread.start waits for it). Almost every deadline is cancelled (the script
ends first); one that passes calls its function in a thread of its own, so a kill that waits on
the Docker engine holds up no other run's deadline.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class Deadline:
    __slots__ = ("when", "fn", "pending", "_owner")

    def __init__(self, when: float, fn: Callable[[], None], owner: "Deadlines"):
        self.when, self.fn, self._owner = when, fn, owner
        self.pending = True  # neither cancelled nor passed yet

    def cancel(self) -> None:
        """fn will not be called, unless it already was (as with Timer.cancel)."""
        self._owner._cancel(self)


class Deadlines:
    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._cancelled = 0  # cancelled entries still in the heap
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, fn: Callable[[], None]) -> Deadline:
        """Call fn once `seconds` have passed, unless the returned Deadline is cancelled first."""
        deadline = Deadline(time.monotonic() + seconds, fn, self)
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline.when, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="deadlines")
                self._thread.start()
            elif earliest is None or deadline.when < earliest:
                self._cond.notify()  # it sleeps until the earliest one: this one comes sooner
        return deadline

    def _cancel(self, deadline: Deadline) -> None:
        with self._cond:
            if not deadline.pending:
                return
            deadline.pending = False
            self._cancelled += 1
            # Cancelled entries wait in the heap until their time; a long timeout would keep
            # thousands of them, so the heap is rebuilt once they are half of it.
            if self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2].pending]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
            threading.Thread(target=due.fn, daemon=True, name="deadline-passed").start()

    def _next_due(self) -> Deadline:
        """Sleeps until the earliest deadline not cancelled passes; takes it out of the heap."""
        while True:
            while self._heap and not self._heap[0][2].pending:
                heapq.heappop(self._heap)
                self._cancelled -= 1
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                due = heapq.heappop(self._heap)[2]
                due.pending = False
                return due
            self._cond.wait(self._heap[0][0] - now if self._heap else None)


# The process's deadlines (every runner thread's run shares the one thread).
DEADLINES = Deadlines()

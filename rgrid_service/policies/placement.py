"""Which queued execution goes to which worker, this tick.

Least-loaded first: a worker with a free slot and the lowest share of busy slots wins; ties go to
the worker that was given the fewest executions recently, so equal jobs spread evenly instead of
packing onto the first node. A batch with a `parallel` limit never gets more than that many at once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class WorkerLoad:
    worker_id: str
    slots: int
    busy: int  # running + dispatched-but-not-yet-claimed
    recent: int  # executions placed on it within the placement window


@dataclass(frozen=True)
class Queued:
    execution_id: str
    batch_id: str | None = None
    batch_parallel: int | None = None


def place(queued: list[Queued], workers: list[WorkerLoad], batch_busy: dict[str, int],
          prefetch: int = 0) -> list[tuple[str, str]]:
    """(execution id, worker id) pairs, in queue order.

    A worker takes up to its slots, plus `prefetch` more once every worker is full: a prefetched
    run waits at its node and starts the instant a slot there frees, instead of a dispatch later.
    Free slots anywhere are always filled first (lowest busy share wins).
    """
    loads = {w.worker_id: w for w in workers}
    in_batch = dict(batch_busy)
    decisions: list[tuple[str, str]] = []
    for q in queued:
        if q.batch_id and q.batch_parallel and in_batch.get(q.batch_id, 0) >= q.batch_parallel:
            continue
        free = [w for w in loads.values() if w.busy < w.slots + prefetch]
        if not free:
            break
        best = min(free, key=lambda w: (w.busy / w.slots, w.recent, w.worker_id))
        loads[best.worker_id] = replace(best, busy=best.busy + 1, recent=best.recent + 1)
        if q.batch_id:
            in_batch[q.batch_id] = in_batch.get(q.batch_id, 0) + 1
        decisions.append((q.execution_id, best.worker_id))
    return decisions

"""Which queued execution goes to which worker, this tick.

Least-loaded first: a worker with a free slot and the lowest share of busy slots wins; ties go to
the worker that was given the fewest executions recently, so equal jobs spread evenly instead of
packing onto the first node. A batch with a `parallel` limit never gets more than that many at once,
nor a tenant with a limit of concurrent runs (policies.quotas) more than its limit running or placed.
A run handed ahead to a worker whose slots are all taken moves to a worker with a free slot
(`steal`), so running ahead never makes a run wait behind a long one.
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
    tenant_id: str | None = None


def place(queued: list[Queued], workers: list[WorkerLoad], batch_busy: dict[str, int],
          prefetch: int = 0, tenant_busy: dict[str, int] | None = None,
          tenant_limit: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """(execution id, worker id) pairs, in queue order.

    A worker takes up to its slots, plus `prefetch` more once every worker is full: a prefetched
    run waits at its node and starts the instant a slot there frees, instead of a dispatch later.
    Free slots anywhere are always filled first (lowest busy share wins). `tenant_busy` counts each
    tenant's runs running or placed, `tenant_limit` the tenants that have a limit of them.
    """
    loads = {w.worker_id: w for w in workers}
    in_batch = dict(batch_busy)
    of_tenant = dict(tenant_busy or {})
    limits = tenant_limit or {}
    decisions: list[tuple[str, str]] = []
    for q in queued:
        if q.batch_id and q.batch_parallel and in_batch.get(q.batch_id, 0) >= q.batch_parallel:
            continue
        if q.tenant_id in limits and of_tenant.get(q.tenant_id, 0) >= limits[q.tenant_id]:
            continue
        free = [w for w in loads.values() if w.busy < w.slots + prefetch]
        if not free:
            break
        best = min(free, key=lambda w: (w.busy / w.slots, w.recent, w.worker_id))
        loads[best.worker_id] = replace(best, busy=best.busy + 1, recent=best.recent + 1)
        if q.batch_id:
            in_batch[q.batch_id] = in_batch.get(q.batch_id, 0) + 1
        if q.tenant_id is not None:
            of_tenant[q.tenant_id] = of_tenant.get(q.tenant_id, 0) + 1
        decisions.append((q.execution_id, best.worker_id))
    return decisions


@dataclass(frozen=True)
class Waiting:
    """A run handed ahead to `worker_id` that has not started, because every slot there is taken."""

    execution_id: str
    worker_id: str


def steal(waiting: list[Waiting], workers: list[WorkerLoad], placed: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(execution id, new worker id) for waiting runs, oldest first, that a worker with a free
    slot now (not mere room to run ahead) can start at once. `placed` are this tick's decisions
    from place(), which take free slots first. The run's old Ray task stays queued on its first
    worker and finds it already claimed when it starts (the claim settles the duplicate)."""
    loads = {w.worker_id: w for w in workers}
    for _, worker_id in placed:
        if worker_id in loads:
            w = loads[worker_id]
            loads[worker_id] = replace(w, busy=w.busy + 1)
    moves: list[tuple[str, str]] = []
    for run in waiting:
        free = [w for w in loads.values() if w.worker_id != run.worker_id and w.busy < w.slots]
        if not free:
            break
        best = min(free, key=lambda w: (w.busy / w.slots, w.recent, w.worker_id))
        loads[best.worker_id] = replace(best, busy=best.busy + 1, recent=best.recent + 1)
        if run.worker_id in loads:
            old = loads[run.worker_id]
            loads[run.worker_id] = replace(old, busy=max(0, old.busy - 1))
        moves.append((run.execution_id, best.worker_id))
    return moves

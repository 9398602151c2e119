"""The dead-worker rule and what happens to the executions a dead worker was running."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rgrid_core.states import ExecutionStatus


@dataclass(frozen=True)
class WorkerBeat:
    worker_id: str
    last_heartbeat_at: datetime | None  # None: never sent one
    registered_at: datetime
    ray_node_alive: bool | None = None  # None: Ray does not know the node (yet)


@dataclass(frozen=True)
class DeadWorker:
    worker_id: str
    reason: str


def dead_workers(workers: list[WorkerBeat], now: datetime, dead_after: timedelta) -> list[DeadWorker]:
    """Workers to declare dead: no heartbeat for dead_after (counted from registration if none
    was ever sent), or Ray reports their node dead, which is usually sooner."""
    dead = []
    for w in workers:
        if w.ray_node_alive is False:
            dead.append(DeadWorker(w.worker_id, f"Ray reported node of {w.worker_id} dead"))
            continue
        last = w.last_heartbeat_at or w.registered_at
        silent = now - last
        if silent > dead_after:
            since = last.strftime("%H:%M:%S")
            dead.append(DeadWorker(w.worker_id, f"no heartbeat from {w.worker_id} since {since} ({_human(silent)})"))
    return dead


@dataclass(frozen=True)
class Orphan:
    execution_id: str
    attempt: int
    max_attempts: int


def orphan_outcome(orphan: Orphan) -> str:
    """'queued' again while attempts remain, else 'lost'."""
    return ExecutionStatus.QUEUED if orphan.attempt < orphan.max_attempts else ExecutionStatus.LOST


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

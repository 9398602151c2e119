"""The dead-worker rule: which workers to declare dead, and why."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


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


def unbooted(booting_since: dict[str, datetime], now: datetime, boot_timeout: timedelta) -> list[DeadWorker]:
    """Workers whose server was created but whose agent never sent a first heartbeat in time."""
    return [DeadWorker(w, f"{w} did not boot within {_human(boot_timeout)} of being requested")
            for w, since in sorted(booting_since.items()) if now - since > boot_timeout]


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

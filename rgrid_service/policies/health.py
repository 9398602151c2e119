"""The dead-worker rule: which workers to declare dead, and why.

Silence only counts while the control plane could have heard it. While the database is away no
heartbeat or lease renewal can land, so a silence that overlaps such a stretch is measured from the
moment the control plane could read its database again (`reachable_since`), not from the last beat:
an outage longer than dead_after must not declare the whole fleet dead when it ends.

The excuse is bounded, so a control plane that merely believes it is deaf cannot switch detection
off for good: one stretch of outages excuses at most `max_excused` (a setting, a multiple of
dead_after) counted from the last moment it was known to hear (`excused_until`); heartbeats that
land while the workers' API probe says "down" prove it was hearing after all (`heard_during`); and
a fresh orchestrator takes the freshest heartbeat in the fleet as the last moment the control plane
heard its workers (`hearing_at_start`) instead of excusing everything up to its own start.
"""
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


def dead_workers(workers: list[WorkerBeat], now: datetime, dead_after: timedelta,
                 reachable_since: datetime | None = None) -> list[DeadWorker]:
    """Workers to declare dead: silent for dead_after (counted from registration if no heartbeat
    was ever sent, and never from before `reachable_since`), or Ray reports their node dead, which
    is usually sooner. `reachable_since`: when the control plane last came back to its database
    after it could not read it (None: it has been reading it all along)."""
    dead = []
    for w in workers:
        if w.ray_node_alive is False:
            dead.append(DeadWorker(w.worker_id, f"Ray reported node of {w.worker_id} dead"))
            continue
        last = w.last_heartbeat_at or w.registered_at
        counted = silent_since(last, reachable_since)
        if now - counted > dead_after:
            since = last.strftime("%H:%M:%S")
            reason = f"no heartbeat from {w.worker_id} since {since} ({_human(now - last)})"
            if counted > last:
                reason += (f"; {_human(now - counted)} of that after the control plane could hear its workers again at "
                           f"{counted.strftime('%H:%M:%S')}")
            dead.append(DeadWorker(w.worker_id, reason))
    return dead


def silent_since(last: datetime, reachable_since: datetime | None) -> datetime:
    """Where a silence starts counting: the last sign of life, or the moment the control plane
    could read its database again if that is later (nothing could be heard before it)."""
    return max(last, reachable_since) if reachable_since is not None else last


def excused_until(deaf_since: datetime, now: datetime, max_excused: timedelta) -> datetime:
    """The `reachable_since` a stretch of not hearing (since deaf_since, the last moment the control
    plane was known to hear) may claim: now, but never past deaf_since + max_excused, after which
    silence counts again."""
    return min(now, deaf_since + max_excused)


def heard_during(probe_down_since: datetime, freshest_beat: datetime | None) -> bool:
    """A heartbeat landed after the workers' API probe first said "down": the workers reach the
    control plane, only the probe does not (wrong URL, no hairpin), so their silence is theirs."""
    return freshest_beat is not None and freshest_beat > probe_down_since


def hearing_at_start(freshest_beat: datetime | None, now: datetime, dead_after: timedelta,
                     max_excused: timedelta) -> tuple[datetime | None, datetime | None]:
    """(deaf_since, reachable_since) for an orchestrator's first read. A heartbeat within dead_after
    shows the control plane was hearing its workers: nothing to excuse, so a crash-looping
    orchestrator still declares silent workers dead. No recent heartbeat (the control plane may
    have been down as a whole): excused from the freshest one, within max_excused."""
    if freshest_beat is None or now - freshest_beat <= dead_after:  # None: no worker to excuse
        return None, None
    return freshest_beat, excused_until(freshest_beat, now, max_excused)


def lease_cutoff(now: datetime, lease_timeout: timedelta, reachable_since: datetime | None) -> datetime | None:
    """Run leases renewed before this moment have expired; None when none can have: the database
    came back less than lease_timeout ago, so no runner has had the time to renew."""
    cutoff = now - lease_timeout
    if reachable_since is not None and reachable_since >= cutoff:
        return None
    return cutoff


def unbooted(booting_since: dict[str, datetime], now: datetime, boot_timeout: timedelta) -> list[DeadWorker]:
    """Workers whose server was created but whose agent never sent a first heartbeat in time."""
    return [DeadWorker(w, f"{w} did not boot within {_human(boot_timeout)} of being requested")
            for w, since in sorted(booting_since.items()) if now - since > boot_timeout]


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

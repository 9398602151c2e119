"""The health sweep: heartbeats and Ray's node states -> dead-worker rule -> declare dead.

A dead worker's runs go back to the queue (or `lost`), and its record leaves the fleet's desired
set, so the next fleet update deletes its server; the provisioning policy adds a replacement when
the queue (or min_workers) needs one. Runs whose runner stopped renewing, and uploads that never
finished, are cleaned up here too. Each worker's Ray node id is recorded on its record.

A sweep that cannot read the database is remembered (DatabaseWatch): nobody could beat or renew
meanwhile, so silence is counted from the moment it could read it again (policies.health).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from .. import lifecycle
from ..fleet.records import record_ray_nodes
from ..policies.health import dead_workers, lease_cutoff
from ..settings import ServiceSettings
from .snapshot import health_snapshot, ray_worker_nodes

log = logging.getLogger("rgrid.orchestrator")


class DatabaseWatch:
    """When this orchestrator could last read its database again after it could not. Until its
    first read it has seen nothing, so that read counts as the database coming back too: a
    control plane that was down with its database hears a full dead_after before declaring."""

    def __init__(self) -> None:
        self.reachable_since: datetime | None = None
        self._failing = True

    def read(self, engine, nodes):
        """health_snapshot, remembering whether the database answered."""
        try:
            with engine.connect() as conn:
                now, beats = health_snapshot(conn, nodes)
        except Exception:
            if not self._failing:
                log.warning("the database is unreachable: no worker is declared dead and no lease expires "
                            "for silence until it is back")
            self._failing = True
            raise
        if self._failing:
            self._failing, self.reachable_since = False, now
            log.info("database reachable at %s; silence before that does not count", now.strftime("%H:%M:%S"))
        return now, beats


def sweep_tick(settings: ServiceSettings, engine, watch: DatabaseWatch) -> list[str]:
    nodes = ray_worker_nodes()
    now, beats = watch.read(engine, nodes)
    since = watch.reachable_since
    # Which Ray node carries each worker, for `rgrid workers` (the API does not talk to Ray).
    record_ray_nodes(engine, {w: n.node_id for w, n in nodes.items() if n.alive})
    # Upload URLs are dead after presign expiry: nobody can finish those uploads any more.
    expired = lifecycle.expire_uploads(engine, now - timedelta(seconds=settings.presign_expiry_seconds + 60))
    if expired:
        log.info("canceled %d execution(s) whose uploads never completed", expired)
    dead = dead_workers(list(beats), now, timedelta(seconds=settings.dead_after_seconds), since)
    for d in dead:
        orphans = lifecycle.declare_dead(engine, d.worker_id, d.reason)
        log.warning("worker %s is dead (%s); orphans: %s", d.worker_id, d.reason,
                    ", ".join(f"{e}->{s}" for e, s in orphans) or "none")
    # A run whose runner died on a live worker. The margin past dead_after lets a whole dead
    # worker be declared first, so its runs carry that (more useful) reason.
    lease_timeout = settings.dead_after_seconds + settings.heartbeat_interval_seconds + settings.sweep_interval_seconds
    cutoff = lease_cutoff(now, timedelta(seconds=lease_timeout), since)
    for execution_id, outcome in lifecycle.expire_leases(engine, cutoff) if cutoff else ():
        log.warning("%s: its runner stopped renewing its lease; now %s", execution_id, outcome)
    return [d.worker_id for d in dead]

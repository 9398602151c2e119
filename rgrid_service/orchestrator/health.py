"""The health sweep: heartbeats and Ray's node states -> dead-worker rule -> declare dead.

A dead worker's runs go back to the queue (or `lost`), and its record leaves the fleet's desired
set, so the next fleet update deletes its server; the provisioning policy adds a replacement when
the queue (or min_workers) needs one. Runs whose runner stopped renewing, and uploads that never
finished, are cleaned up here too. Each worker's Ray node id is recorded on its record.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from .. import lifecycle
from ..fleet.records import record_ray_nodes
from ..policies.health import dead_workers
from ..settings import ServiceSettings
from .snapshot import health_snapshot, ray_worker_nodes

log = logging.getLogger("rgrid.orchestrator")


def sweep_tick(settings: ServiceSettings, engine) -> list[str]:
    nodes = ray_worker_nodes()
    with engine.connect() as conn:
        now, beats = health_snapshot(conn, nodes)
    # Which Ray node carries each worker, for `rgrid workers` (the API does not talk to Ray).
    record_ray_nodes(engine, {w: n.node_id for w, n in nodes.items() if n.alive})
    # Upload URLs are dead after presign expiry: nobody can finish those uploads any more.
    expired = lifecycle.expire_uploads(engine, now - timedelta(seconds=settings.presign_expiry_seconds + 60))
    if expired:
        log.info("canceled %d execution(s) whose uploads never completed", expired)
    dead = dead_workers(list(beats), now, timedelta(seconds=settings.dead_after_seconds))
    for d in dead:
        orphans = lifecycle.declare_dead(engine, d.worker_id, d.reason)
        log.warning("worker %s is dead (%s); orphans: %s", d.worker_id, d.reason,
                    ", ".join(f"{e}->{s}" for e, s in orphans) or "none")
    # A run whose runner died on a live worker. The margin past dead_after lets a whole dead
    # worker be declared first, so its runs carry that (more useful) reason.
    lease_timeout = settings.dead_after_seconds + settings.heartbeat_interval_seconds + settings.sweep_interval_seconds
    for execution_id, outcome in lifecycle.expire_leases(engine, now - timedelta(seconds=lease_timeout)):
        log.warning("%s: its runner stopped renewing its lease; now %s", execution_id, outcome)
    return [d.worker_id for d in dead]

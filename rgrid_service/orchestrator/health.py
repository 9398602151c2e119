"""The health sweep: heartbeats and Ray's node states -> dead-worker rule -> declare dead.

A dead worker's runs go back to the queue (or `lost`), and its record leaves the fleet's desired
set, so the next fleet update deletes its server; the provisioning policy adds a replacement when
the queue (or min_workers) needs one. Runs whose runner stopped renewing, and uploads that never
finished, are cleaned up here too. Each worker's Ray node id is recorded on its record.

A sweep that cannot read the database, or whose workers' API does not answer, is remembered
(HearingWatch): nobody could beat or renew meanwhile, so silence is counted from the moment the
control plane could hear again (policies.health).
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


class HearingWatch:
    """Since when the control plane could hear its workers: the moment it last came back to its
    database after a failed read, or the last sweep at which the API the workers beat through did
    not answer. Silence before that is nobody's fault but ours (policies.health). Until its first
    read it has heard nothing, so that read counts as a return too: a control plane that was down
    with its database gives every worker a full dead_after before declaring it dead."""

    def __init__(self, api_health_url: str | None = None, probe_timeout: float = 2.0) -> None:
        self.api_health_url = api_health_url
        self.probe_timeout = probe_timeout
        self.reachable_since: datetime | None = None
        self._db_failing = True
        self._api_failing = False

    def read(self, engine, nodes):
        """health_snapshot, remembering whether the database and the workers' API answered."""
        api_down = self._api_down()
        try:
            with engine.connect() as conn:
                now, beats = health_snapshot(conn, nodes)
        except Exception:
            if not self._db_failing:
                log.warning("the database is unreachable: no worker is declared dead and no lease expires "
                            "for silence until it is back")
            self._db_failing = True
            raise
        if api_down and not self._api_failing:
            log.warning("the worker API at %s does not answer: no worker is declared dead and no lease "
                        "expires for silence until it does", self.api_health_url)
        if self._db_failing or api_down:
            self.reachable_since = now
        if self._db_failing or (self._api_failing and not api_down):
            log.info("the control plane hears its workers again at %s; silence before that does not count",
                     now.strftime("%H:%M:%S"))
        self._db_failing, self._api_failing = False, api_down
        return now, beats

    def _api_down(self) -> bool:
        if not self.api_health_url:
            return False
        import httpx

        # trust_env=False: the orchestrator runs with ray_process_env, whose HTTP proxies point at a
        # closed port, so a probe of an API off loopback through them always failed, and with it
        # every worker's silence stopped counting (found by chaos scenario 10).
        try:
            return httpx.get(self.api_health_url, timeout=self.probe_timeout, trust_env=False).status_code != 200
        except httpx.HTTPError:
            return True


def discard_staged(settings: ServiceSettings, runs: list, store=None) -> None:
    """Delete the staged uploads of runs whose upload expired (uploads.discard, best effort), in
    the background: a store that is down must not hold up the sweep of dead workers."""
    from ..api.uploads import discard_soon
    from ..storage import ObjectStore

    store = store or ObjectStore.shared(settings)
    for run in runs:
        discard_soon(store, run.id, run.inputs or [])


def sweep_tick(settings: ServiceSettings, engine, watch: HearingWatch) -> list[str]:
    nodes = ray_worker_nodes()
    now, beats = watch.read(engine, nodes)
    since = watch.reachable_since
    # Which Ray node carries each worker, for `rgrid workers` (the API does not talk to Ray).
    record_ray_nodes(engine, {w: n.node_id for w, n in nodes.items() if n.alive})
    # Upload URLs are dead after presign expiry: nobody can finish those uploads any more.
    expired = lifecycle.expire_uploads(engine, now - timedelta(seconds=settings.presign_expiry_seconds + 60))
    if expired:
        log.info("canceled %d execution(s) whose uploads never completed", len(expired))
        discard_staged(settings, expired)
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

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
from ..policies.health import dead_workers, excused_until, heard_during, hearing_at_start, lease_cutoff
from ..settings import ServiceSettings
from .snapshot import health_snapshot, ray_worker_nodes

log = logging.getLogger("rgrid.orchestrator")


class HearingWatch:
    """Since when the control plane could hear its workers: the moment it last came back to its
    database after a failed read, or the last sweep at which the API the workers beat through did
    not answer. Silence before that is nobody's fault but ours (policies.health). The excuse is
    bounded: one stretch of outages excuses at most max_excused from the last moment it heard; a
    probe that fails while heartbeats keep landing excuses nothing; and a fresh orchestrator
    counts from the freshest heartbeat in the fleet, not from its own start (policies.health)."""

    def __init__(self, api_health_url: str | None = None, probe_timeout: float = 2.0,
                 dead_after: timedelta = timedelta(seconds=120), max_excused: timedelta = timedelta(seconds=600)) -> None:
        self.api_health_url = api_health_url
        self.probe_timeout = probe_timeout
        self.dead_after, self.max_excused = dead_after, max_excused
        self.reachable_since: datetime | None = None
        self._started = False
        self._db_failing = False
        self._api_failing = False
        self._deaf_since: datetime | None = None  # start of the current stretch of excuses
        self._probe_down_since: datetime | None = None
        self._last_heard: datetime | None = None  # `now` of the last read that heard cleanly
        self._said: set[str] = set()
        self._probe = None  # the httpx client of the API probe, made on first use

    def read(self, engine, nodes):
        """health_snapshot, remembering whether the database and the workers' API answered."""
        api_down = self._api_down()
        try:
            with engine.connect() as conn:
                now, beats = health_snapshot(conn, nodes)
        except Exception:
            if not self._db_failing:
                log.warning("the database is unreachable: no worker is declared dead and no lease expires "
                            "for silence until it is back (for at most %s from the last moment it heard them)",
                            self.max_excused)
                if self._deaf_since is None and self._last_heard is not None:
                    self._deaf_since = self._last_heard
            self._db_failing = True
            raise
        freshest = max((b.last_heartbeat_at for b in beats if b.last_heartbeat_at), default=None)
        if not self._started:
            self._started = True
            self._deaf_since, self.reachable_since = hearing_at_start(freshest, now, self.dead_after, self.max_excused)
            self._db_failing = False
        if self._db_failing:
            self._excuse(self._deaf_since or now, now)
            log.info("the control plane reads its database again at %s; silence before that does not count",
                     now.strftime("%H:%M:%S"))
        if api_down:
            self._api_outage(now, freshest)
        elif self._api_failing:
            log.info("the worker API answers again at %s; silence before that does not count", now.strftime("%H:%M:%S"))
        if not api_down and not self._db_failing:
            self._last_heard = now
            if self.reachable_since is None or now - self.reachable_since > self.dead_after:
                self._deaf_since, self._said = None, set()  # heard cleanly for dead_after: the stretch is over
        self._db_failing, self._api_failing = False, api_down
        return now, beats

    def _api_outage(self, now: datetime, freshest: datetime | None) -> None:
        if not self._api_failing:
            self._probe_down_since = now
            log.warning("the worker API at %s does not answer: no worker is declared dead and no lease "
                        "expires for silence until it does (for at most %s)", self.api_health_url, self.max_excused)
        if self._deaf_since is None:
            self._deaf_since = self._last_heard or now
        if heard_during(self._probe_down_since, freshest):
            self._say("heard", "heartbeats still land (the latest at %s) although the probe of %s fails: the "
                      "workers reach the control plane, so their silence counts; check RGRID_WORKER_API_URL "
                      "from the orchestrator's host", freshest.strftime("%H:%M:%S"), self.api_health_url)
            return
        self._excuse(self._deaf_since, now)

    def _excuse(self, deaf_since: datetime, now: datetime) -> None:
        until = excused_until(deaf_since, now, self.max_excused)
        if self.reachable_since is None or until > self.reachable_since:
            self.reachable_since = until
        if until < now:
            self._say("capped", "the control plane has not heard its workers cleanly since %s, longer than the "
                      "%s an outage may excuse: silence counts again from %s", deaf_since.strftime("%H:%M:%S"),
                      self.max_excused, until.strftime("%H:%M:%S"))

    def _say(self, what: str, *args) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning(*args)

    def _api_down(self) -> bool:
        if not self.api_health_url:
            return False
        import httpx

        if self._probe is None:
            # One client for every probe: a new one per sweep built an SSL context (reading the CA
            # bundle) each time, the larger part of an idle orchestrator's CPU.
            # trust_env=False: the orchestrator runs with ray_process_env, whose HTTP proxies point
            # at a closed port, so a probe of an API off loopback through them always failed, and
            # with it every worker's silence stopped counting (found by chaos scenario 10).
            self._probe = httpx.Client(timeout=self.probe_timeout, trust_env=False)
        try:
            return self._probe.get(self.api_health_url).status_code != 200
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

"""The provisioning tick: fleet snapshot -> provisioning, billing and boot-timeout policies ->
worker records -> one fleet update at a time, off the scheduler's thread.

The records are written first (they are the desired state); the provider then converges the
servers to them. An update that fails is recorded with its reason as a sentence and tried again
with back-off; dispatch never waits for one.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from rgrid_core.constants import SLOTS_PER_WORKER
from rgrid_core.states import WorkerState

from .. import lifecycle
from ..fleet import FleetBusy, FleetProvider, explain, records, retry_wait
from ..policies.billing import retire
from ..policies.health import unbooted
from ..policies.provisioning import Bounds, provision
from ..settings import ServiceSettings
from .snapshot import booting_since, fleet_snapshot

log = logging.getLogger("rgrid.fleet")

# Even when the records did not change, the servers are checked against them this often (a server
# deleted behind the fleet's back, a record written by another process).
RECHECK_SECONDS = 60.0


class FleetManager:
    def __init__(self, settings: ServiceSettings, engine, provider: FleetProvider):
        self.settings = settings
        self.engine = engine
        self.provider = provider
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet")
        self._update: Future | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._known: set[str] | None = None  # worker ids with a server, as of the last update
        self._checked_at = 0.0

    def tick(self) -> None:
        """Decide, write the decision into the records, and start an update if none is running."""
        s = self.settings
        with self.engine.connect() as conn:
            snap = fleet_snapshot(conn, self.provider.name)
            booting = booting_since(conn, self.provider.name)
        trigger = "provisioning"
        for d in unbooted(booting, snap.now, timedelta(seconds=s.boot_timeout_seconds)):
            lifecycle.declare_dead(self.engine, d.worker_id, d.reason)
            self._note("decision", d.reason, "replacement")
            trigger = "replacement"
        decision = provision(snap, Bounds(s.min_workers, s.max_workers, SLOTS_PER_WORKER))
        if decision.add:
            ids = records.request_workers(self.engine, decision.add, self.provider.name, s.server_type,
                                          s.server_location, SLOTS_PER_WORKER)
            self._note("decision", f"requested {', '.join(ids)}: {decision.reason}", "provisioning")
        plan = retire(snap.workers, snap.now, timedelta(seconds=s.billing_period_seconds),
                      timedelta(seconds=s.retire_margin_seconds), s.min_workers, snap.queued)
        drained = records.move(self.engine, list(plan.drain), WorkerState.DRAINING)
        kept = records.move(self.engine, list(plan.keep), WorkerState.ACTIVE)
        deleted = records.retire_idle(self.engine, list(plan.delete))
        if drained or kept or deleted:
            for reason in plan.reasons:
                self._note("decision", reason, "retirement")
        if deleted:
            trigger = "retirement"
        self.converge(trigger)

    def converge(self, trigger: str = "provisioning") -> Future | None:
        """Start one update toward the records' desired set, unless one runs or a retry waits.
        trigger says what the update is for (provisioning, replacement, retirement, manual)."""
        if self._update is not None and not self._update.done():
            return None
        if time.monotonic() < self._retry_at:
            return None
        wanted = {d.worker_id for d in records.desired_servers(self.engine, self.provider.name)}
        recheck = time.monotonic() - self._checked_at >= RECHECK_SECONDS
        if wanted == self._known and not recheck and trigger != "manual":
            return None  # nothing to change: no engine run
        self._update = self._pool.submit(self._apply, trigger)
        return self._update

    def _apply(self, trigger: str) -> None:
        desired = records.desired_servers(self.engine, self.provider.name, self.settings.server_image)
        started = time.monotonic()
        try:
            diff = self.provider.preview(desired)
            if diff.changes:
                servers = self.provider.apply(desired)
            else:
                servers = self.provider.observe()
        except FleetBusy as e:
            log.info("fleet update still running elsewhere: %s", e)
            return
        except Exception as e:  # noqa: BLE001 - every provider error becomes a recorded sentence
            self._failures += 1
            wait = retry_wait(self._failures, self.settings.fleet_retry_seconds)
            self._retry_at = time.monotonic() + wait
            sentence = explain(e, self._failures)
            log.warning("fleet update failed (%s); next try in %.0f s", sentence, wait, exc_info=log.isEnabledFor(logging.DEBUG))
            self._note("error", sentence, trigger, time.monotonic() - started, ok=False)
            return
        self._failures = 0
        self._known, self._checked_at = {s.worker_id for s in servers}, time.monotonic()
        changed = records.record_servers(self.engine, self.provider.name, servers)
        if diff.changes:
            summary = ", ".join(f"{kind} {', '.join(ids)}" for kind, ids in
                                (("created", diff.create), ("deleted", diff.delete), ("replaced", diff.replace),
                                 ("updated", diff.update)) if ids)
            self._note("update", summary, trigger, time.monotonic() - started)
        if changed["booting"] or changed["deleted"]:
            log.info("records: %s", changed)

    def _note(self, kind: str, message: str, trigger: str, duration: float | None = None, ok: bool = True) -> None:
        log.info("%s (%s): %s", kind, trigger, message)
        try:
            records.record_event(self.engine, kind, message, trigger, duration, ok)
        except Exception:  # noqa: BLE001 - the log line above still tells it
            log.exception("could not record a fleet event")

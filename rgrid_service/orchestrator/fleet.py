"""The provisioning tick: fleet snapshot -> plan (policies.fleetplan: boot timeout, provisioning,
billing hour, retired by hand) -> act: worker records, then one fleet update at a time, off the
scheduler's thread. A preview is the same plan without acting.

The records are written first (they are the desired state); the provider then converges the
servers to them. An update that fails is recorded with its reason as a sentence and tried again
with back-off; dispatch never waits for one.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from rgrid_core.constants import SLOTS_PER_WORKER
from rgrid_core.states import WorkerState

from .. import lifecycle
from ..fleet import FleetBusy, FleetDiff, FleetProvider, Server, ServerSpec, explain, records, retry_wait
from ..policies.fleetplan import TRIGGERS, FleetPlan, FleetPolicy, plan
from ..policies.provisioning import FleetSnapshot
from ..settings import ServiceSettings
from . import metrics
from .snapshot import fleet_snapshot

log = logging.getLogger("rgrid.fleet")

# Even when the records did not change, the servers are checked against them this often (a server
# deleted behind the fleet's back, a record written by another process).
RECHECK_SECONDS = 60.0


def fleet_policy(s: ServiceSettings) -> FleetPolicy:
    return FleetPolicy(s.min_workers, s.max_workers, SLOTS_PER_WORKER, timedelta(seconds=s.billing_period_seconds),
                       timedelta(seconds=s.retire_margin_seconds), timedelta(seconds=s.boot_timeout_seconds))


def current_plan(engine, settings: ServiceSettings, provider: str) -> tuple[FleetSnapshot, FleetPlan]:
    """The snapshot and what the policies make of it now."""
    with engine.connect() as conn:
        snap = fleet_snapshot(conn, provider, settings.quota_max_running_runs)
    return snap, plan(snap, fleet_policy(settings))


def update_diff(diff: FleetDiff) -> dict[str, list[str]]:
    """What an update changes, as fleet_events.diff records it."""
    return {"create": list(diff.create), "delete": list(diff.delete), "replace": list(diff.replace + diff.update)}


@dataclass(frozen=True)
class Preview:
    """What the fleet would do now, changing nothing: the plan, the desired set it leads to, the
    servers that exist, and the engine's diff between them."""

    snapshot: FleetSnapshot
    plan: FleetPlan
    desired: list[ServerSpec]  # after the plan
    new: list[str]  # the ids the workers the plan adds would get
    existing: list[Server]
    diff: FleetDiff


def preview(engine, settings: ServiceSettings, provider: FleetProvider) -> Preview:
    """The tick's plan, not acted on, and the provider's preview of the desired set it leads to.
    FleetBusy while an update is running."""
    snap, p = current_plan(engine, settings, provider.name)
    with engine.connect() as conn:
        new = records.next_worker_ids(conn, p.provisioning.add)
    gone = {d.worker_id for d in p.dead} | set(p.delete)
    desired = [d for d in records.desired_servers(engine, provider.name, settings.server_image)
               if d.worker_id not in gone]
    desired += [ServerSpec(w, settings.server_type, settings.server_location, settings.server_image) for w in new]
    return Preview(snap, p, desired, new, provider.observe(), provider.preview(desired))


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
        self._pending: str | None = None  # why the next update runs, until one starts

    def tick(self) -> None:
        """Plan, write the plan into the records, and start an update if none is running."""
        _, p = current_plan(self.engine, self.settings, self.provider.name)
        self.act(p)

    def act(self, p: FleetPlan) -> None:
        s = self.settings
        for d in p.dead:
            lifecycle.declare_dead(self.engine, d.worker_id, d.reason)
            self._note("decision", d.reason, "replacement")
        if p.provisioning.add:
            ids = records.request_workers(self.engine, p.provisioning.add, self.provider.name, s.server_type,
                                          s.server_location, SLOTS_PER_WORKER)
            self._note("decision", f"requested {', '.join(ids)}: {p.provisioning.reason}",
                       "replacement" if p.dead else "provisioning")
        drained = records.move(self.engine, list(p.retirement.drain), WorkerState.DRAINING)
        kept = records.move(self.engine, list(p.retirement.keep), WorkerState.ACTIVE)
        deleted = records.retire_idle(self.engine, list(p.delete))
        if drained or kept or deleted:
            for a in p.actions():
                if a.kind in ("drain", "keep", "delete") and set(a.workers) & set(drained + kept + deleted):
                    self._note("decision", a.reason, a.trigger)
        done = {"manual": set(deleted) & set(p.by_hand), "replacement": p.dead,
                "retirement": set(deleted) - set(p.by_hand), "provisioning": p.provisioning.add}
        self.converge(next((t for t in TRIGGERS if done[t]), "provisioning"))

    def converge(self, trigger: str = "provisioning") -> Future | None:
        """Start one update toward the records' desired set, unless one runs or a retry waits.
        trigger says what the update is for (provisioning, replacement, retirement, manual); an
        update that cannot start yet keeps the most specific reason it was asked for."""
        self._pending = min((t for t in (self._pending, trigger) if t), key=TRIGGERS.index)
        if self._update is not None and not self._update.done():
            return None
        if time.monotonic() < self._retry_at:
            return None
        wanted = {d.worker_id for d in records.desired_servers(self.engine, self.provider.name)}
        recheck = time.monotonic() - self._checked_at >= RECHECK_SECONDS
        if wanted == self._known and not recheck:
            self._pending = None
            return None  # nothing to change: no engine run
        leaving = (self._known or set()) - wanted
        if leaving and records.retired_by_hand(self.engine, leaving):
            self._pending = "manual"  # a not yet booted worker an operator retired leaves the set at once
        trigger, self._pending = self._pending, None
        self._update = self._pool.submit(self._apply, trigger)
        return self._update

    def _apply(self, trigger: str) -> None:
        desired = records.desired_servers(self.engine, self.provider.name, self.settings.server_image)
        started = time.monotonic()
        try:
            self.provider.recover()
            diff = self.provider.preview(desired)
            if diff.changes:
                servers = self.provider.apply(desired)
            else:
                servers = self.provider.observe()
        except FleetBusy as e:
            log.info("fleet update still running elsewhere: %s", e)
            self._pending = self._pending or trigger
            metrics.fleet_update("busy", time.monotonic() - started)
            return
        except Exception as e:  # noqa: BLE001 - every provider error becomes a recorded sentence
            metrics.fleet_update("error", time.monotonic() - started)
            metrics.provider_error(e)
            self._failures += 1
            wait = retry_wait(self._failures, self.settings.fleet_retry_seconds)
            self._retry_at = time.monotonic() + wait
            self._pending = self._pending or trigger
            sentence = explain(e, self._failures)
            log.warning("fleet update failed (%s); next try in %.0f s", sentence, wait, exc_info=log.isEnabledFor(logging.DEBUG))
            self._note("error", sentence, trigger, time.monotonic() - started, ok=False)
            return
        metrics.fleet_update("ok", time.monotonic() - started)
        self._failures = 0
        self._known, self._checked_at = {s.worker_id for s in servers}, time.monotonic()
        changed = records.record_servers(self.engine, self.provider.name, servers)
        if diff.changes:
            summary = ", ".join(f"{kind} {', '.join(ids)}" for kind, ids in
                                (("created", diff.create), ("deleted", diff.delete), ("replaced", diff.replace),
                                 ("updated", diff.update)) if ids)
            self._note("update", summary, trigger, time.monotonic() - started, diff=update_diff(diff))
        if changed["booting"] or changed["deleted"]:
            log.info("records: %s", changed)

    def _note(self, kind: str, message: str, trigger: str, duration: float | None = None, ok: bool = True,
              diff: dict | None = None) -> None:
        log.info("%s (%s): %s", kind, trigger, message)
        try:
            records.record_event(self.engine, kind, message, trigger, duration, ok, diff)
        except Exception:  # noqa: BLE001 - the log line above still tells it
            log.exception("could not record a fleet event")

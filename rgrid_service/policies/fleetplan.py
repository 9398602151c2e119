"""The fleet's whole decision at one tick, as one pure function of a snapshot.

    plan(snapshot, policy) -> FleetPlan: the workers that never booted (declared dead, then
    replaced), how many workers to add (policies.provisioning), which idle workers drain, go or
    stay at the end of their paid hour (policies.billing), and which workers retired by hand go.

The orchestrator's tick acts on the plan (writes the records, then converges the servers); a
preview (`rgrid fleet preview`) shows the same plan and acts on nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from rgrid_core.states import WorkerState

from .billing import Retirement, retire
from .health import DeadWorker, unbooted
from .provisioning import Bounds, FleetSnapshot, Provisioning, provision

# Why a fleet update runs, most specific first: an update started for several reasons is
# recorded with the first of them.
TRIGGERS = ("manual", "replacement", "retirement", "provisioning")


@dataclass(frozen=True)
class FleetPolicy:
    """The knobs of the fleet's policies (from the settings)."""

    min_workers: int
    max_workers: int
    slots_per_worker: int
    billing_period: timedelta
    retire_margin: timedelta
    boot_timeout: timedelta


@dataclass(frozen=True)
class Action:
    """One thing the plan does, for people: what, to which workers, and why."""

    kind: str  # declare_dead | provision | drain | keep | delete
    workers: tuple[str, ...]
    reason: str
    trigger: str  # replacement | provisioning | retirement | manual


@dataclass(frozen=True)
class FleetPlan:
    dead: tuple[DeadWorker, ...]  # booting too long: declared dead (their servers go, replacements come)
    provisioning: Provisioning  # how many workers to add, and why
    retirement: Retirement  # billing hour: drain, delete, keep active
    by_hand: tuple[str, ...]  # retired by hand and idle now: delete

    @property
    def delete(self) -> tuple[str, ...]:
        """Draining workers to delete now (still idle: the act re-checks that in its write)."""
        return self.retirement.delete + self.by_hand

    def actions(self) -> list[Action]:
        acts = [Action("declare_dead", (d.worker_id,), d.reason, "replacement") for d in self.dead]
        if self.provisioning.add:
            acts.append(Action("provision", (), f"{self.provisioning.add} more: {self.provisioning.reason}",
                               "replacement" if self.dead else "provisioning"))
        for kind, ids in (("drain", self.retirement.drain), ("delete", self.retirement.delete),
                          ("keep", self.retirement.keep)):
            # Each billing reason begins with its worker's id.
            acts += [Action(kind, (w,), next((r for r in self.retirement.reasons if r.startswith(f"{w} ")), ""),
                            "retirement") for w in ids]
        acts += [Action("delete", (w,), f"{w} retired by hand and idle: deleted", "manual") for w in self.by_hand]
        return acts

    @property
    def trigger(self) -> str | None:
        """Why an update would run after this plan (None: the plan changes no server)."""
        changing = {a.trigger for a in self.actions() if a.kind in ("declare_dead", "provision", "delete")}
        return next((t for t in TRIGGERS if t in changing), None)


def plan(snap: FleetSnapshot, policy: FleetPolicy) -> FleetPlan:
    booting = {w.worker_id: w.created_at for w in snap.workers if w.state == WorkerState.BOOTING}
    dead = tuple(unbooted(booting, snap.now, policy.boot_timeout))
    gone = {d.worker_id for d in dead}
    # The workers that stay after this plan: provisioning counts what is really coming.
    staying = replace(snap, workers=tuple(w for w in snap.workers if w.worker_id not in gone))
    adding = provision(staying, Bounds(policy.min_workers, policy.max_workers, policy.slots_per_worker))
    by_hand = [w for w in staying.workers if w.retire_requested and w.state == WorkerState.DRAINING]
    billed = tuple(w for w in staying.workers if not (w.retire_requested and w.state == WorkerState.DRAINING))
    retirement = retire(billed, snap.now, policy.billing_period, policy.retire_margin, policy.min_workers, snap.queued)
    return FleetPlan(dead, adding, retirement, tuple(w.worker_id for w in by_hand if w.assigned == 0))

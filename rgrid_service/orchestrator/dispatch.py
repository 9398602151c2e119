"""Dispatch: queued executions -> placement policy -> a call on the chosen worker node's runner
(rgrid_service.ray_dispatch).

Driven by changes: the dispatch loop sleeps on the queue's bell (rgrid_service.queuebell), which
the API rings when a run is queued or ends or a worker registers, and dispatches at once. A safety
tick runs anyway: every dispatch interval while runs wait, every idle interval when none does. So
an idle orchestrator reads nothing, however much history is stored. The runner's atomic claim
makes a duplicate dispatch harmless.
"""
from __future__ import annotations

import logging
import threading
import time

from .. import lifecycle
from ..policies.placement import place, steal
from ..settings import ServiceSettings
from .snapshot import RayNode, dispatch_snapshot, ray_worker_nodes

log = logging.getLogger("rgrid.orchestrator")


class Dispatcher:
    def __init__(self, settings: ServiceSettings, engine):
        self.settings = settings
        self.engine = engine
        self._runners = None  # rgrid_service.ray_dispatch.Runners, made at the first call
        self._last_full = float("-inf")
        # Whether the last tick saw runs waiting for a slot or handed ahead: then the safety tick is
        # the dispatch interval (steals and re-dispatches fall due by time), else the idle interval.
        self.waiting = True
        # Whether the last tick found room and nothing at all to do (nothing queued, waiting or
        # handed ahead): a ring then is a lone new run, no burst to gather, and is not held back.
        self.quiet = False
        self._nodes: dict[str, RayNode] | None = None
        self._nodes_at = 0.0

    def _call(self, method: str, *args):
        """One step on the workers' runners (`send`, `prepare` or `reap`: ray_dispatch.Runners)."""
        if self._runners is None:
            from ..ray_dispatch import Runners

            self._runners = Runners()
        return getattr(self._runners, method)(*args)

    def run(self, wake: threading.Event, stop: threading.Event) -> None:
        """The dispatch loop: a tick when the bell rings (at most one per min gap, so a burst of
        finished runs is one tick; at once when the last tick left the grid quiet), else a safety
        tick. A tick that fails (the database away) is logged and tried again on the next."""
        s = self.settings
        last = last_rung = float("-inf")
        while not stop.is_set():
            interval = s.dispatch_interval_seconds if self.waiting else s.dispatch_idle_interval_seconds
            rung = wake.wait(max(0.0, last + interval - time.monotonic()))
            if stop.is_set():
                return
            if rung:
                # Wait out the min gap since the last rung tick before clearing: rings meanwhile join
                # this tick. A safety tick just before does not hold a ring back: it is no burst;
                # nor does a quiet grid (a run queued just after the last one ended: `rgrid run`
                # twice in a row, whose second ring came within the gap of the first's finish).
                if not self.quiet:
                    stop.wait(max(0.0, last_rung + s.dispatch_min_gap_seconds - time.monotonic()))
                wake.clear()
            last = time.monotonic()
            if rung:
                last_rung = last
            try:
                self.dispatch_tick(full=last - self._last_full >= s.dispatch_interval_seconds)
            except Exception:  # noqa: BLE001 - the loop must outlive a failed tick
                log.exception("dispatch tick failed; will retry on the next ring or tick")

    def dispatch_tick(self, full: bool = True) -> int:
        """Place queued executions and send them. A full tick also collects what finished calls
        reported and asks Ray for its nodes afresh; a tick triggered by a queue change between
        them reuses the node list it got less than an interval ago, so a burst of short runs does
        not cost two Ray round trips per finished run.

        A full tick sends first, with the node list it holds, and asks Ray only then: the first
        ring after a quiet spell makes a full tick, and those two round trips sat between the
        run's queueing and its start. Should Ray's fresh list differ, the runs just sent to a
        worker whose node is gone, dead or another one now go back to the queue at once, and the
        tick places again with the fresh list, as it would have had it asked first."""
        if not full:
            return len(self._place_and_send(self._ray_nodes(fresh=False)))
        self._last_full = time.monotonic()
        held = self._nodes
        if held is None:  # nothing to act on before asking
            held = self._ray_nodes(fresh=True)
            self._reap()
            return len(self._place_and_send(held))
        sent = self._place_and_send(held)
        self._reap()
        fresh = self._ray_nodes(fresh=True)
        if fresh == held:
            return len(sent)
        stale = [e for e, w in sent if moved_off(held.get(w), fresh.get(w))]
        if stale:
            lifecycle.release_dispatches(self.engine, stale)
            log.info("sent %s to a node Ray no longer has as it was; placing again", ", ".join(stale))
        return len(sent) - len(stale) + len(self._place_and_send(fresh))

    def _reap(self) -> None:
        """Log what each finished run's call returned. A run whose runner died with its call (its
        process killed, its node gone) goes back to the queue at once if nobody claimed it: a call
        queued behind others never started, and would otherwise wait for redispatch_after."""
        lost = []
        for execution_id, outcome, runner_died in self._call("reap"):
            log.info("%s: %s", execution_id, outcome)
            if runner_died:
                lost.append(execution_id)
        if lost:
            lifecycle.release_dispatches(self.engine, lost)

    def _place_and_send(self, nodes: dict[str, RayNode]) -> list[tuple[str, str]]:
        """One snapshot, placement and send with this node list; returns (run, worker) sent."""
        s = self.settings
        with self.engine.connect() as conn:
            snap = dispatch_snapshot(conn, nodes, s.redispatch_after_seconds, s.placement_window_seconds,
                                     s.dispatch_prefetch_per_worker, s.dispatch_interval_seconds,
                                     s.quota_max_running_runs)
        # Runs to place, or handed ahead (they may move to a free slot once a dispatch interval
        # old): the safety tick stays at the dispatch interval. No room anywhere (snap is None)
        # waits for a ring: a run ending or a worker registering.
        self.waiting = snap is not None and bool(snap.queued or snap.waiting or snap.handed_ahead)
        self.quiet = snap is not None and not self.waiting
        if snap is None or not (snap.queued or snap.waiting):
            return []
        decisions = place(list(snap.queued), list(snap.workers), snap.batch_busy, prefetch=s.dispatch_prefetch_per_worker,
                          tenant_busy=snap.tenant_busy, tenant_limit=snap.tenant_limit)
        moves = steal(list(snap.waiting), list(snap.workers), decisions)
        if moves:
            log.info("moved %s to a free slot", ", ".join(f"{e}->{w}" for e, w in moves))
        sent = lifecycle.mark_dispatched(self.engine, decisions + moves)
        if sent:
            self._call("send", [(e, nodes[w].node_id, nodes[w].slots) for e, w in sent])
            log.info("dispatched %s", ", ".join(f"{e}->{w}" for e, w in sent))
        return sent

    def _ray_nodes(self, fresh: bool) -> dict[str, RayNode]:
        now = time.monotonic()
        if fresh or self._nodes is None or now - self._nodes_at >= self.settings.dispatch_interval_seconds:
            nodes = ray_worker_nodes()
            if nodes != self._nodes:
                self._prepare_runners(nodes)
            self._nodes, self._nodes_at = nodes, now
        return self._nodes

    def _prepare_runners(self, nodes: dict[str, RayNode]) -> None:
        """Make the runner of every new live node now, when the node appears, rather than at its
        first run (a Ray worker process takes a second or more to start), and end the runners of
        nodes Ray no longer has alive. A failure is logged: the first run on the
        node then makes its runner."""
        try:
            self._call("prepare", [(n.node_id, n.slots) for n in nodes.values() if n.alive and n.slots])
        except Exception:  # noqa: BLE001 - an optimisation; the tick goes on
            log.exception("could not prepare the workers' runners; their first runs will make them")


def moved_off(held: RayNode | None, fresh: RayNode | None) -> bool:
    """Whether a run sent to `held` can no longer start: Ray has that worker's node no more, or
    dead, or under another id (restarted)."""
    return held is not None and (fresh is None or not fresh.alive or fresh.node_id != held.node_id)

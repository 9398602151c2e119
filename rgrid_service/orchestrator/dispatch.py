"""Dispatch: queued executions -> placement policy -> the detached dispatch actor (Ray tasks).

Driven by changes: every poll interval one cheap query fingerprints the queue, and a change (a
submit, a claim, a finished run) dispatches at once; a full tick runs every dispatch interval
anyway. The runner's atomic claim makes a duplicate dispatch harmless.
"""
from __future__ import annotations

import logging
import time

from .. import lifecycle
from ..policies.placement import place, steal
from ..settings import ServiceSettings
from .snapshot import RayNode, dispatch_snapshot, queue_signature, ray_worker_nodes

log = logging.getLogger("rgrid.orchestrator")


class Dispatcher:
    def __init__(self, settings: ServiceSettings, engine):
        self.settings = settings
        self.engine = engine
        self._actor = None
        self._last_signature: tuple | None = None
        self._last_tick = 0.0
        self._nodes: dict[str, RayNode] | None = None
        self._nodes_at = 0.0

    @property
    def actor(self):
        if self._actor is None:
            from ..ray_dispatch import get_dispatcher

            self._actor = get_dispatcher()
        return self._actor

    def _call(self, method: str, *args):
        """Call the dispatch actor. If it died with its head, forget it: the next call creates it
        again (get_if_exists finds none in a new cluster). The runs it was handed stay queued and
        are sent again after redispatch_after."""
        import ray

        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except ray.exceptions.RayActorError:
            self._actor = None
            raise

    def dispatch_if_changed(self) -> int:
        """Dispatch now if the queue changed since the last tick, else once per dispatch interval."""
        with self.engine.connect() as conn:
            signature = queue_signature(conn)
        due = time.monotonic() - self._last_tick >= self.settings.dispatch_interval_seconds
        if signature == self._last_signature and not due:
            return 0
        self._last_signature, self._last_tick = signature, time.monotonic()
        return self.dispatch_tick(full=due)

    def dispatch_tick(self, full: bool = True) -> int:
        """Place queued executions and send them. A full tick also collects finished tasks'
        reports and asks Ray for its nodes afresh; a tick triggered by a queue change between
        them reuses the node list it got less than an interval ago, so a burst of short runs does
        not cost two Ray round trips per finished run."""
        if full:
            for execution_id, outcome in self._call("reap"):
                log.info("%s: %s", execution_id, outcome)
        nodes = self._ray_nodes(fresh=full)
        s = self.settings
        with self.engine.connect() as conn:
            snap = dispatch_snapshot(conn, nodes, s.redispatch_after_seconds, s.placement_window_seconds,
                                     s.dispatch_prefetch_per_worker, s.dispatch_interval_seconds,
                                     s.quota_max_running_runs)
        if snap is None or not (snap.queued or snap.waiting):
            return 0
        decisions = place(list(snap.queued), list(snap.workers), snap.batch_busy, prefetch=s.dispatch_prefetch_per_worker,
                          tenant_busy=snap.tenant_busy, tenant_limit=snap.tenant_limit)
        moves = steal(list(snap.waiting), list(snap.workers), decisions)
        if moves:
            log.info("moved %s to a free slot", ", ".join(f"{e}->{w}" for e, w in moves))
        sent = lifecycle.mark_dispatched(self.engine, decisions + moves)
        if sent:
            self._call("dispatch", [(e, nodes[w].node_id) for e, w in sent])
            log.info("dispatched %s", ", ".join(f"{e}->{w}" for e, w in sent))
        return len(sent)

    def _ray_nodes(self, fresh: bool) -> dict[str, RayNode]:
        now = time.monotonic()
        if fresh or self._nodes is None or now - self._nodes_at >= self.settings.dispatch_interval_seconds:
            self._nodes, self._nodes_at = ray_worker_nodes(), now
        return self._nodes

"""The orchestrator process: APScheduler loops that gather a snapshot, ask a policy, and act.

- dispatch: queued executions -> placement policy -> the detached dispatch actor (Ray tasks).
- sweep: worker heartbeats + Ray's node states -> dead-worker rule -> mark dead, hand orphans
  back to the queue (or `lost`), delete the server and start a replacement.

It never runs scripts and never decides an execution's outcome. The runner's atomic claim makes a
duplicate dispatch harmless, so after a restart it simply carries on from the database.
"""
from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import and_, case, func, or_, select

from . import lifecycle
from .db.models import Execution, Worker, WorkerHeartbeat
from rgrid_core.constants import SLOT_RESOURCE, WORKER_LABEL
from rgrid_core.states import ExecutionStatus, WorkerState
from .db.session import engine_for
from .policies.health import WorkerBeat, dead_workers
from .policies.placement import Queued, Waiting, WorkerLoad, place, steal
from .settings import ServiceSettings, get_settings

log = logging.getLogger("rgrid.orchestrator")

def connect_ray(address: str) -> None:
    import ray

    from .raynet import pin_loopback

    kwargs = {}
    if address.startswith(("127.", "localhost")):
        pin_loopback()
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(address=address, namespace="rgrid", log_to_driver=False, logging_level=logging.WARNING, **kwargs)

def ray_worker_nodes() -> dict[str, dict]:
    """worker id -> {node_id, alive, slots} for every Ray node that carries an rgrid worker label."""
    import ray

    nodes: dict[str, dict] = {}
    for node in ray.nodes():
        worker_id = (node.get("Labels") or {}).get(WORKER_LABEL)
        if not worker_id:
            continue
        info = {"node_id": node["NodeID"], "alive": bool(node["Alive"]),
                "slots": int(node.get("Resources", {}).get(SLOT_RESOURCE, 0))}
        # A worker id may appear twice (a dead node and its restarted self): alive wins.
        if worker_id not in nodes or info["alive"]:
            nodes[worker_id] = info
    return nodes

class Orchestrator:
    def __init__(self, settings: ServiceSettings, provider=None):
        self.settings = settings
        self.engine = engine_for(settings.database_url)
        self.provider = provider
        self._dispatcher = None
        self._last_signature: tuple | None = None
        self._last_tick = 0.0
        self._nodes: dict[str, dict] | None = None
        self._nodes_at = 0.0
        # Deleting a dead server and booting its replacement takes seconds to minutes: it runs here,
        # one at a time, so the sweep keeps declaring other deaths meanwhile.
        self._fleet = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet")

    @property
    def dispatcher(self):
        if self._dispatcher is None:
            from .ray_dispatch import get_dispatcher

            self._dispatcher = get_dispatcher()
        return self._dispatcher

    # ------------------------------------------------------------------ dispatch

    def queue_signature(self) -> tuple:
        """Cheap fingerprint of the queue: it changes when a run is submitted, claimed or finished."""
        with self.engine.connect() as conn:
            counts = dict(conn.execute(
                select(Execution.status, func.count())
                .where(Execution.status.in_((ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)))
                .group_by(Execution.status)
            ).all())
            newest = conn.execute(select(func.max(Execution.queued_at)).where(Execution.status == ExecutionStatus.QUEUED)).scalar()
        return counts.get(ExecutionStatus.QUEUED, 0), counts.get(ExecutionStatus.RUNNING, 0), newest

    def dispatch_if_changed(self) -> int:
        """Dispatch now if the queue changed since the last tick, else once per dispatch interval."""
        signature = self.queue_signature()
        due = time.monotonic() - self._last_tick >= self.settings.dispatch_interval_seconds
        if signature == self._last_signature and not due:
            return 0
        self._last_signature, self._last_tick = signature, time.monotonic()
        return self.dispatch_tick(full=due)

    def dispatch_tick(self, full: bool = True) -> int:
        """Place queued executions and send them. A full tick (every dispatch interval) also
        collects finished tasks' reports and asks Ray for its nodes afresh; a tick triggered by a
        queue change between them reuses the node list it got less than an interval ago, so a
        burst of short runs does not cost two Ray round trips per finished run."""
        import ray

        if full:
            for execution_id, outcome in ray.get(self.dispatcher.reap.remote()):
                log.info("%s: %s", execution_id, outcome)
        nodes = self._ray_nodes(fresh=full)
        with self.engine.connect() as conn:
            now = lifecycle.db_now(conn)
            stale = now - timedelta(seconds=self.settings.redispatch_after_seconds)
            window = now - timedelta(seconds=self.settings.placement_window_seconds)
            active = conn.execute(select(Worker.id).where(Worker.state == WorkerState.ACTIVE)).scalars().all()
            pending = and_(Execution.status == ExecutionStatus.QUEUED, Execution.dispatched_at >= stale)
            holder = case((Execution.status == ExecutionStatus.RUNNING, Execution.worker_id), else_=Execution.dispatched_to)
            busy = dict(conn.execute(
                select(holder, func.count()).where(or_(Execution.status == ExecutionStatus.RUNNING, pending)).group_by(holder)
            ).all())
            recent = dict(conn.execute(
                select(Execution.dispatched_to, func.count())
                .where(Execution.dispatched_at >= window)
                .group_by(Execution.dispatched_to)
            ).all())
            workers = [
                WorkerLoad(w, nodes[w]["slots"], busy.get(w, 0), recent.get(w, 0))
                for w in active if w in nodes and nodes[w]["alive"] and nodes[w]["slots"] > 0
            ]
            prefetch = self.settings.dispatch_prefetch_per_worker
            free = sum(max(0, w.slots + prefetch - w.busy) for w in workers)
            if free <= 0:
                return 0
            waiting = self._waiting(conn, now, stale, workers)
            queued = conn.execute(
                select(Execution.id, Execution.batch_id, Execution.batch_parallel)
                .where(Execution.status == ExecutionStatus.QUEUED,
                       or_(Execution.dispatched_at.is_(None), Execution.dispatched_at < stale))
                .order_by(Execution.queued_at, Execution.id)
                .limit(free * 20)
            ).all()
            if not queued and not waiting:
                return 0
            batches = {q.batch_id for q in queued if q.batch_id and q.batch_parallel}
            batch_busy = dict(conn.execute(
                select(Execution.batch_id, func.count())
                .where(Execution.batch_id.in_(batches), or_(Execution.status == ExecutionStatus.RUNNING, pending))
                .group_by(Execution.batch_id)
            ).all()) if batches else {}
        decisions = place([Queued(q.id, q.batch_id, q.batch_parallel) for q in queued], workers, batch_busy,
                          prefetch=prefetch)
        moves = steal(waiting, workers, decisions)
        if moves:
            log.info("moved %s to a free slot", ", ".join(f"{e}->{w}" for e, w in moves))
        sent = lifecycle.mark_dispatched(self.engine, decisions + moves)
        if sent:
            ray.get(self.dispatcher.dispatch.remote([(e, nodes[w]["node_id"]) for e, w in sent]))
            log.info("dispatched %s", ", ".join(f"{e}->{w}" for e, w in sent))
        return len(sent)

    def _waiting(self, conn, now, stale, workers: list[WorkerLoad]) -> list[Waiting]:
        """Runs handed ahead more than a dispatch interval ago to a worker whose slots are all
        running something: candidates to move to a free slot elsewhere (policies.placement.steal)."""
        if not any(w.busy < w.slots for w in workers):
            return []  # no free slot anywhere: nothing could move
        slots = {w.worker_id: w.slots for w in workers}
        running = dict(conn.execute(
            select(Execution.worker_id, func.count()).where(Execution.status == ExecutionStatus.RUNNING).group_by(Execution.worker_id)
        ).all())
        full = [w for w, n in slots.items() if running.get(w, 0) >= n]
        if not full:
            return []
        ahead_since = now - timedelta(seconds=self.settings.dispatch_interval_seconds)
        rows = conn.execute(
            select(Execution.id, Execution.dispatched_to)
            .where(Execution.status == ExecutionStatus.QUEUED, Execution.dispatched_to.in_(full),
                   Execution.dispatched_at >= stale, Execution.dispatched_at < ahead_since)
            .order_by(Execution.queued_at, Execution.id)
        ).all()
        return [Waiting(r.id, r.dispatched_to) for r in rows]

    def _ray_nodes(self, fresh: bool) -> dict[str, dict]:
        now = time.monotonic()
        if fresh or self._nodes is None or now - self._nodes_at >= self.settings.dispatch_interval_seconds:
            self._nodes, self._nodes_at = ray_worker_nodes(), now
        return self._nodes

    # ------------------------------------------------------------------ health

    def sweep_tick(self) -> list[str]:
        nodes = ray_worker_nodes()
        with self.engine.connect() as conn:
            now = lifecycle.db_now(conn)
        # Upload URLs are dead after presign expiry: nobody can finish those uploads any more.
        expired = lifecycle.expire_uploads(
            self.engine, now - timedelta(seconds=self.settings.presign_expiry_seconds + 60))
        if expired:
            log.info("canceled %d execution(s) whose uploads never completed", expired)

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Worker.id, Worker.created_at, WorkerHeartbeat.last_heartbeat_at)
                .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
                .where(Worker.state == WorkerState.ACTIVE)
            ).all()
        beats = [
            WorkerBeat(r.id, r.last_heartbeat_at, r.created_at,
                       nodes[r.id]["alive"] if r.id in nodes else None)
            for r in rows
        ]
        dead = dead_workers(beats, now, timedelta(seconds=self.settings.dead_after_seconds))
        for d in dead:
            orphans = lifecycle.declare_dead(self.engine, d.worker_id, d.reason)
            log.warning("worker %s is dead (%s); orphans: %s", d.worker_id, d.reason,
                        ", ".join(f"{e}->{s}" for e, s in orphans) or "none")
            if self.provider is not None:
                self._fleet.submit(self._replace, d.worker_id)
        # A run whose runner died on a live worker. The margin past dead_after lets a whole dead
        # worker be declared first, so its runs carry that (more useful) reason.
        lease_timeout = (self.settings.dead_after_seconds + self.settings.heartbeat_interval_seconds
                         + self.settings.sweep_interval_seconds)
        for execution_id, outcome in lifecycle.expire_leases(self.engine, now - timedelta(seconds=lease_timeout)):
            log.warning("%s: its runner stopped renewing its lease; now %s", execution_id, outcome)
        return [d.worker_id for d in dead]

    def _replace(self, worker_id: str) -> None:
        try:
            self.provider.delete(worker_id)
            if self.settings.replace_dead_workers:
                new_id = self.provider.create()
                log.info("replacement worker %s started for %s", new_id, worker_id)
        except Exception:  # noqa: BLE001
            log.exception("provider could not replace %s", worker_id)

def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    settings = get_settings()
    if not settings.ray_address:
        raise SystemExit("RGRID_RAY_ADDRESS is not set: the orchestrator needs the Ray head's address.")
    for _ in range(120):
        try:
            connect_ray(settings.ray_address)
            break
        except Exception as e:  # noqa: BLE001
            log.warning("Ray head not reachable yet (%s); retrying", e)
            time.sleep(1)
    provider = None
    if settings.local_grid_home:
        from .fleet.local import LocalProvider

        provider = LocalProvider(Path(settings.local_grid_home))
    orch = Orchestrator(settings, provider)
    scheduler = BlockingScheduler()
    scheduler.add_job(_safe(orch.dispatch_if_changed), "interval",
                      seconds=min(settings.dispatch_poll_interval_seconds, settings.dispatch_interval_seconds),
                      max_instances=1, coalesce=True, id="dispatch")
    scheduler.add_job(_safe(orch.sweep_tick), "interval", seconds=settings.sweep_interval_seconds,
                      max_instances=1, coalesce=True, id="sweep")
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("orchestrator started: dispatch every %.1f s, sweep every %.1f s, dead after %.0f s",
             settings.dispatch_interval_seconds, settings.sweep_interval_seconds, settings.dead_after_seconds)
    scheduler.start()

def _safe(fn):
    def wrapper():
        try:
            fn()
        except Exception:  # noqa: BLE001 - a failed tick (database away) must not stop the loop
            log.exception("tick failed; will retry next interval")

    return wrapper

if __name__ == "__main__":
    main()

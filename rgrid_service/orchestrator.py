"""The orchestrator process: an APScheduler loop that hands queued executions to Ray.

It never runs scripts and never decides an execution's outcome: it only dispatches. The runner's
atomic claim makes a duplicate dispatch harmless, so after a restart it simply dispatches again
whatever is still queued.
"""
from __future__ import annotations

import logging
import signal
import time
from datetime import timedelta

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import and_, func, or_, select

from . import lifecycle
from .db.models import QUEUED, RUNNING, Execution
from .db.session import engine_for
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


class Dispatcher:
    """Dispatch up to the number of free slots; the queue itself stays in the database."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.engine = engine_for(settings.database_url)
        self.inflight: dict = {}  # ObjectRef -> execution id

    def slot_capacity(self) -> int:
        import ray

        return int(ray.cluster_resources().get("rgrid_slot", 0))

    def tick(self) -> int:
        import ray

        from rgrid_runner.task import execute

        self._reap()
        capacity = self.slot_capacity()
        with self.engine.connect() as conn:
            now = lifecycle.db_now(conn)
            stale = now - timedelta(seconds=self.settings.redispatch_after_seconds)
            busy = conn.execute(
                select(func.count()).where(
                    or_(
                        Execution.status == RUNNING,
                        and_(Execution.status == QUEUED, Execution.dispatched_at >= stale),
                    )
                )
            ).scalar_one()
            free = capacity - busy
            if free <= 0:
                return 0
            ids = conn.execute(
                select(Execution.id)
                .where(
                    Execution.status == QUEUED,
                    or_(Execution.dispatched_at.is_(None), Execution.dispatched_at < stale),
                )
                .order_by(Execution.queued_at, Execution.id)
                .limit(free)
            ).scalars().all()
        if not ids:
            return 0
        lifecycle.mark_dispatched(self.engine, ids)
        for execution_id in ids:
            ref = execute.options(scheduling_strategy="SPREAD").remote(execution_id)
            self.inflight[ref] = execution_id
        log.info("dispatched %d execution(s): %s", len(ids), ", ".join(ids))
        return len(ids)

    def _reap(self) -> None:
        import ray

        if not self.inflight:
            return
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        for ref in done:
            execution_id = self.inflight.pop(ref)
            try:
                log.info("%s: %s", execution_id, ray.get(ref))
            except Exception as e:  # noqa: BLE001 - the task died; the execution's state is the DB's
                log.warning("%s: task ended with %s", execution_id, e)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    settings = get_settings()
    if not settings.ray_address:
        raise SystemExit("RGRID_RAY_ADDRESS is not set: the orchestrator needs the Ray head's address.")
    for attempt in range(60):
        try:
            connect_ray(settings.ray_address)
            break
        except Exception as e:  # noqa: BLE001
            log.warning("Ray head not reachable yet (%s); retrying", e)
            time.sleep(1)
    dispatcher = Dispatcher(settings)
    scheduler = BlockingScheduler()
    scheduler.add_job(
        _safe(dispatcher.tick), "interval", seconds=settings.dispatch_interval_seconds,
        max_instances=1, coalesce=True, id="dispatch",
    )
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("orchestrator started; dispatching every %.1f s", settings.dispatch_interval_seconds)
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

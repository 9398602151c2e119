"""`python -m rgrid_service.orchestrator`: connect to Ray, pick the fleet provider, run the jobs.

The jobs run in a child process that this one starts again whenever it dies. Ray ends a driver
whose head went away (a fatal error on its next call to the GCS, or 60 s without one), and a head
restarted without GCS fault tolerance is a new cluster that only a new driver can join. The new
child connects to it and makes the workers' runners there; everything else it reads from the
database.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

from apscheduler.schedulers.blocking import BlockingScheduler

from rgrid_core.retry import retrying

from .. import queuebell
from ..db.session import engine_for
from ..fleet import make_provider
from ..fleet.launch import launch_problem
from ..fleet.prices import load_price_table
from ..settings import ServiceSettings, get_settings
from . import connect_ray, log, metrics
from .costs import CostRecorder
from .dispatch import Dispatcher
from .fleet import FleetManager
from .health import HearingWatch, sweep_tick
from .retention import retention_tick


CHILD = "RGRID_ORCHESTRATOR_CHILD"
CONFIG_ERROR = 2  # the child cannot run as configured: starting it again would not help
STEADY_AFTER = 60.0  # a child that ran this long resets the backoff


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.environ.get(CHILD) == "1":
        orchestrate()
    else:
        sys.exit(supervise())


def supervise() -> int:
    """Run the orchestrator in a child process and start it again when it dies (see above)."""
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quick_ends = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "rgrid_service.orchestrator"], env={**os.environ, CHILD: "1"})
        code = child.wait()
        if stopping or code in (0, CONFIG_ERROR):
            return code
        quick_ends = 0 if time.monotonic() - started > STEADY_AFTER else quick_ends + 1
        wait = min(30, 2 ** quick_ends)
        log.error("the orchestrator process ended (exit %s; Ray ends it when its head goes away); "
                  "starting it again in %d s", code, wait)
        time.sleep(wait)
        if stopping:
            return code


def orchestrate() -> None:
    # "skipped: maximum number of running instances reached" is the point of max_instances=1.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    settings = get_settings()
    if not settings.ray_address:
        log.error("RGRID_RAY_ADDRESS is not set: the orchestrator needs the Ray head's address.")
        sys.exit(CONFIG_ERROR)
    if not settings.ray_token_file:
        log.error("RGRID_RAY_TOKEN_FILE is not set: the orchestrator needs the file holding the Ray cluster's token.")
        sys.exit(CONFIG_ERROR)
    if make_provider(settings) is not None and launch_problem(settings):
        # CONFIG_ERROR, not 1: the supervisor stops instead of restarting it every 30 s to no end.
        log.error("The orchestrator cannot start workers: %s", launch_problem(settings))
        sys.exit(CONFIG_ERROR)
    retrying(lambda: connect_ray(settings.ray_address, settings.ray_token_file), seconds=120, first_wait=0.5,
             max_wait=1, log=log)
    engine = engine_for(settings.database_url)
    dispatcher = Dispatcher(settings, engine)
    wake, stopping = threading.Event(), threading.Event()
    queuebell.Listener(wake, engine, settings.wake_host, settings.wake_port).start()
    threading.Thread(target=dispatcher.run, args=(wake, stopping), name="dispatch", daemon=True).start()
    scheduler = BlockingScheduler()
    # The workers beat and renew through the worker API: while it does not answer, their silence
    # is not theirs (HearingWatch).
    api = settings.worker_api_url
    dead_after = timedelta(seconds=settings.dead_after_seconds)
    watch = HearingWatch(api_health_url=f"{api.rstrip('/')}/v1/health" if api else None, dead_after=dead_after,
                         max_excused=dead_after * settings.outage_excuse_dead_afters)
    # A sweep may hand runs back to the queue (a dead worker's, an expired lease's): it rings too.
    scheduler.add_job(_safe(lambda: (sweep_tick(settings, engine, watch), wake.set())), "interval",
                      seconds=settings.sweep_interval_seconds, max_instances=1, coalesce=True, id="sweep")
    add_observers(scheduler, settings, engine)
    scheduler.add_job(_safe(lambda: retention_tick(settings, engine)), "interval",
                      seconds=settings.retention_interval_seconds, max_instances=1, coalesce=True, id="retention")
    provider = make_provider(settings)
    if provider is not None:
        fleet = FleetManager(settings, engine, provider)
        scheduler.add_job(_safe(fleet.tick), "interval", seconds=settings.provision_interval_seconds,
                          max_instances=1, coalesce=True, id="provisioning")
    def shutdown(*_):
        stopping.set()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, shutdown)
    log.info("orchestrator started: dispatch every %.1f s, sweep every %.1f s, dead after %.0f s, fleet %s "
             "(%d to %d workers, provisioning every %.0f s)", settings.dispatch_interval_seconds,
             settings.sweep_interval_seconds, settings.dead_after_seconds, provider.name if provider else "none",
             settings.min_workers, settings.max_workers, settings.provision_interval_seconds)
    scheduler.start()


def add_observers(scheduler, settings: ServiceSettings, engine) -> None:
    """The jobs that look back at what ended: pricing attempts, and the metrics (and their server)."""
    from datetime import timedelta

    costs = CostRecorder(engine, load_price_table(settings.price_table), timedelta(seconds=settings.billing_period_seconds))
    scheduler.add_job(_safe(lambda: metrics.ATTEMPTS_PRICED.inc(costs.tick())), "interval",
                      seconds=settings.cost_interval_seconds, max_instances=1, coalesce=True, id="costs")
    if settings.orchestrator_metrics_port is not None:
        observer = metrics.RunObserver(engine)
        _safe(observer.start)()
        try:
            metrics.serve(settings.orchestrator_metrics_host, settings.orchestrator_metrics_port)
        except OSError as e:  # the port is taken: orchestrate anyway, without metrics
            log.error("cannot serve metrics on %s:%s (%s); running without them", settings.orchestrator_metrics_host,
                      settings.orchestrator_metrics_port, e)
        scheduler.add_job(_safe(observer.tick), "interval", seconds=settings.metrics_interval_seconds,
                          max_instances=1, coalesce=True, id="metrics")


def _safe(fn):
    def wrapper():
        try:
            fn()
        except Exception:  # noqa: BLE001 - a failed tick (database away) must not stop the loop
            log.exception("tick failed; will retry next interval")

    return wrapper


if __name__ == "__main__":
    main()

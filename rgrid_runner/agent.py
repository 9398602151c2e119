"""The worker agent: registers the worker and sends its heartbeat, in a process of its own.

It runs beside the worker's Ray node (same process group on the local grid, a systemd unit on a
server), so heartbeats never wait behind a script or an event loop. When the control plane has
declared this worker dead, the agent takes the whole worker down: a worker that comes back must
re-register under a new id.

    python -m rgrid_runner.agent --worker-id w-1 --slots 2
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import time

from rgrid_core.retry import retrying
from rgrid_service import lifecycle
from rgrid_service.db.session import engine_for
from rgrid_service.settings import ServiceSettings

log = logging.getLogger("rgrid.agent")


def run(worker_id: str, slots: int, provider: str, settings: ServiceSettings) -> None:
    engine = engine_for(settings.database_url)
    # The database may be away for a while: keep trying (a worker that never registers is
    # declared dead by the control plane's boot timeout).
    registered = retrying(lambda: lifecycle.register_worker(engine, worker_id, provider, slots),
                          seconds=float("inf"), first_wait=0.5, max_wait=2, log=log)
    if not registered:
        _take_worker_down(f"{worker_id} was given up by the control plane earlier; it must come back under a new id")
    log.info("worker %s registered (%d slots); heartbeat every %.1f s", worker_id, slots,
             settings.heartbeat_interval_seconds)
    while True:
        try:
            if not lifecycle.heartbeat(engine, worker_id):
                _take_worker_down(f"{worker_id} was declared dead by the control plane")
        except Exception as e:  # noqa: BLE001 - a missed beat is what dead_after is for
            log.warning("heartbeat failed: %s", e)
        time.sleep(settings.heartbeat_interval_seconds)


def _take_worker_down(reason: str) -> None:
    log.error("%s; stopping this worker", reason)
    if os.environ.get("RGRID_AGENT_KILLS_GROUP", "1") == "1" and os.getpgrp() != os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    raise SystemExit(3)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--provider", default="local")
    opts = ap.parse_args()
    run(opts.worker_id, opts.slots, opts.provider, ServiceSettings())


if __name__ == "__main__":
    main()

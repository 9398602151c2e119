"""The worker agent: registers the worker and sends its heartbeat, in a process of its own.

It runs beside the worker's Ray node (same process group on the local grid, a systemd unit on a
server), so heartbeats never wait behind a script or an event loop. It talks to the control plane
through the worker API with the worker's token alone. When the control plane has given this
worker up (declared it dead, is deleting it, or revoked its token: a refusal whose body says
`"code": "given_up"`), the agent takes the whole worker down: a worker that comes back must
re-register under a new id and token. Any other refusal (a misrouted proxy, an older API during a
deploy) is a failed beat, logged; the control plane's dead_after decides what silence means.

    python -m rgrid_runner.agent --slots 2
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import time

from .settings import WorkerSettings
from .workerclient import Fenced, Refused, WorkerClient

log = logging.getLogger("rgrid.agent")
# How often the agent removes run containers whose runner has gone (their run lock not held).
LEFTOVER_SWEEP_SECONDS = 60.0


def run(slots: int, provider: str, settings: WorkerSettings, client: WorkerClient | None = None) -> None:
    client = client or WorkerClient.for_settings(settings)
    images = runtime_images(settings, client)
    registered = _register(client, slots, provider, images)
    interval = registered.heartbeat_interval_seconds or settings.heartbeat_interval_seconds
    log.info("worker %s registered (%d slots); heartbeat every %.1f s", registered.worker_id, slots, interval)
    last_sweep = time.monotonic()
    while True:
        if settings.docker_host and time.monotonic() - last_sweep >= LEFTOVER_SWEEP_SECONDS:
            from .container import sweep_leftovers

            sweep_leftovers(settings.docker_host, settings.work_root)
            last_sweep = time.monotonic()
        try:
            client.heartbeat()
        except Refused as e:
            if e.given_up:
                _take_worker_down(f"{registered.worker_id} was given up by the control plane (dead, being deleted or "
                                  f"its token revoked): {e}")
            log.warning("heartbeat refused with HTTP %d but not given up (%s); a failed beat, trying again", e.status, e)
        except Fenced as e:  # the control plane has no registration of this worker (yet): register again
            log.warning("heartbeat refused (%s); registering again", e)
            _register(client, slots, provider, images)
        except Exception as e:  # noqa: BLE001 - a missed beat is what dead_after is for
            log.warning("heartbeat failed: %s", e)
        time.sleep(interval)


def runtime_images(settings: WorkerSettings, client: WorkerClient) -> list[dict] | None:
    """The runtime images this worker holds by their published digests, for its registration (the
    node pulled them all before starting the agent); None: it has no Docker. An engine or a
    control plane that does not answer reports none."""
    if not settings.docker_host:
        return None
    from .container import docker_client, held_images

    try:
        return held_images(docker_client(settings.docker_host), settings.image_registry, client.runtime_digests())
    except Exception as e:  # noqa: BLE001 - `rgrid runtimes` then shows this worker lacking them
        log.warning("could not list this worker's runtime images: %s", e)
        return []


def _register(client: WorkerClient, slots: int, provider: str, images: list[dict] | None = None):
    """Register, however long the control plane is away (a worker that never registers is declared
    dead by the control plane's boot timeout); only a given-up refusal takes the worker down."""
    while True:
        try:
            return client.register(slots, provider, budget=600, images=images)
        except Refused as e:
            if e.given_up:
                _take_worker_down(f"the control plane refused to register this worker: {e}")
            log.warning("registration refused with HTTP %d but not given up (%s); trying again", e.status, e)
            time.sleep(2)
        except Exception as e:  # noqa: BLE001 - away, or an answer we cannot use: keep trying
            log.warning("could not register yet: %s", e)
            time.sleep(2)


def _take_worker_down(reason: str) -> None:
    log.error("%s; stopping this worker", reason)
    if os.environ.get("RGRID_AGENT_KILLS_GROUP", "1") == "1" and os.getpgrp() != os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    raise SystemExit(3)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker-id", help="for the log only: the token says which worker this is")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--provider", default="local")
    opts = ap.parse_args()
    run(opts.slots, opts.provider, WorkerSettings())


if __name__ == "__main__":
    main()

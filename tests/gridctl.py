"""Restarting one component of a running local grid: fault injection that only tests use."""
from __future__ import annotations

import time
from pathlib import Path

from rgrid_core.localstate import load_state
from rgrid_service.localgrid.grid import service_env_for, start_api, start_orchestrator
from rgrid_service.localgrid.layout import logs_dir
from rgrid_service.localgrid.procs import spawn, stop_groups, wait_for_port


def restart(home: Path, component: str, pause: float = 0.0) -> None:
    """Stop one control-plane component (api | orchestrator) and start it again."""
    state = load_state(home)
    if state is None or component not in ("api", "orchestrator"):
        raise ValueError(f"cannot restart {component!r}")
    stop_groups([state.pids[component]], grace=5)
    time.sleep(pause)
    env = service_env_for(state)
    (start_api if component == "api" else start_orchestrator)(state, env)
    if component == "api":
        wait_for_port(int(state.api_url.rsplit(":", 1)[1]), 60, "The API")


def restart_s3(home: Path, down_seconds: float) -> None:
    """Stop the object store, keep it away for down_seconds, start it again on the same ports."""
    state = load_state(home)
    stop_groups([state.pids["s3"]], grace=3)
    time.sleep(down_seconds)
    state.pids["s3"] = spawn(state.s3_command, logs_dir(home) / "seaweedfs.log")
    state.save()
    wait_for_port(int(state.s3_endpoint.rsplit(":", 1)[1]), 60, "SeaweedFS S3 gateway")


def restart_head(home: Path, down_seconds: float) -> float:
    """SIGKILL the Ray head (GCS, its raylet, the dashboard), keep it away for
    down_seconds, start it again on the same port. Without GCS fault tolerance it is a new cluster:
    the workers' nodes and the orchestrator's driver must join it again. Returns when the new head
    started (time.monotonic())."""
    import os
    import signal

    from rgrid_service.localgrid.layout import ray_temp_dir
    from rgrid_service.localgrid.rayhead import start_head

    state = load_state(home)
    try:
        os.killpg(state.pids["ray-head"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(down_seconds)
    # `ray start --head` refuses a port that the last head of this temp dir used while any local
    # process still names that GCS (the workers' raylets, which live on for up to a minute): the
    # file is the killed head's, so it goes.
    (ray_temp_dir(home) / "ray_current_cluster").unlink(missing_ok=True)
    ray_port = int(state.ray_address.rsplit(":", 1)[1])
    dash_port = int(state.dashboard_url.rsplit(":", 1)[1]) if state.dashboard_url else None
    state.pids["ray-head"] = start_head(home, service_env_for(state), ray_port, dash_port)
    state.save()
    return time.monotonic()

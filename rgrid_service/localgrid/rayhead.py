"""The local grid's Ray head: only the parts the grid uses, at short socket paths, retried once.

Ray's dashboard runs only when asked for (RGRID_RAY_DASHBOARD, then on dashboard_port): the grid
dispatches through its own actor and reads ray.nodes() from the GCS, neither of which needs it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..raynet import lean_flags, ray_process_env
from .layout import link_ray_logs, logs_dir, ray_temp_dir
from .procs import alive, free_ports, spawn, stop_groups

START_TRIES = 2
START_TIMEOUT = 120.0


def head_command(home: Path, ray_port: int, dashboard_port: int | None, ip: str = "127.0.0.1") -> list[str]:
    """ip: where the head listens (loopback for the local grid; a test network namespace's address).
    dashboard_port None: no dashboard (and a minimal dashboard agent)."""
    agent_port, = free_ports(1)
    dashboard = [] if dashboard_port is None else ["--dashboard-host", ip, "--dashboard-port", str(dashboard_port)]
    return [
        sys.executable, "-m", "rgrid_service.raynet", "start", "--head", "--block",
        "--node-ip-address", ip, "--port", str(ray_port), "--num-cpus", "0",
        "--disable-usage-stats", *dashboard, *lean_flags(dashboard_port is not None),
        # A free port for the dashboard agent instead of the fixed 52365, so grids share a machine.
        "--dashboard-agent-listen-port", str(agent_port),
        # Not used by the grid: no Ray client server, no autoscaler monitor.
        "--no-ray-client-server", "--no-monitor",
        "--temp-dir", str(ray_temp_dir(home)),
    ]


def start_head(home: Path, env: dict[str, str], ray_port: int, dashboard_port: int | None) -> int:
    """Start the head and wait until it runs; one more try if the first one fails (a 2-core machine
    under load can miss one of Ray's start-up deadlines). Returns its pid (= process group)."""
    link_ray_logs(home)
    log = logs_dir(home) / "ray-head.log"
    for attempt in range(1, START_TRIES + 1):
        offset = log.stat().st_size if log.exists() else 0
        pid = spawn(head_command(home, ray_port, dashboard_port), log, env=ray_process_env(env))
        try:
            wait_for_log(log, "Ray runtime started", START_TIMEOUT, "The Ray head", offset, pid)
            return pid
        except TimeoutError:
            stop_groups([pid], grace=5)
            if attempt == START_TRIES:
                raise


def wait_for_log(path: Path, needle: str, timeout: float, what: str, offset: int = 0,
                 pid: int | None = None) -> None:
    """Until `needle` appears in the log after `offset`; a TimeoutError with a sentence otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, errors="replace") as f:
                f.seek(offset)
                if needle in f.read():
                    return
        if pid is not None and not alive(pid):
            raise TimeoutError(f"{what} exited during start-up; see {path}.")
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not start within {timeout:.0f} s; see {path}.")

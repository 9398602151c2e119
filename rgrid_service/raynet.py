"""Every Ray process we start: on 127.0.0.1 when the cluster is on loopback, and with Ray's token
authentication on.

Token: the cluster has one random token (the local grid's `<home>/local/ray-token`, the control
plane's `/etc/rgrid/ray-token`), named by RGRID_RAY_TOKEN_FILE. Every head, worker node and
driver runs with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH pointing at such a file, so a process
without it (a script that got out of its sandbox, anything on the network) cannot join the cluster,
submit tasks or call the dashboard. The token travels only in files, never in an environment
variable a Ray worker process (and so a runner) would carry.

Loopback: Ray rewrites a node IP of 127.0.0.1 into "the remotely reachable address" (the machine's other
interface). The local grid and the tests must never leave loopback, so processes we start pin the
address resolution to loopback before Ray reads it. Production nodes pass their private-network IP
and are untouched (the pin only applies when the requested address is loopback).
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"
TOKEN_FILE_VAR = "RGRID_RAY_TOKEN_FILE"


def pin_loopback() -> None:
    import ray._private.services as services

    original_resolve = services.resolve_ip_for_localhost
    original_get = services.get_node_ip_address

    def resolve_ip_for_localhost(host: str):
        return LOOPBACK if host in ("127.0.0.1", "localhost") else original_resolve(host)

    def get_node_ip_address(address=None):
        import ray._private.worker as worker

        if worker._global_node is not None:
            return worker._global_node.node_ip_address
        if address is None or str(address).startswith(("127.", "localhost")):
            return LOOPBACK
        return original_get(address)

    services.resolve_ip_for_localhost = resolve_ip_for_localhost
    services.get_node_ip_address = get_node_ip_address


NO_CLIENT_SERVER = "--no-ray-client-server"
NO_DASHBOARD = "--no-dashboard"
# Not used by the grid on any node: the log monitor streams worker output to drivers, and the
# orchestrator (the only driver) connects with log_to_driver=False.
NO_LOG_MONITOR = ("--include-log-monitor", "false")


def lean_flags(dashboard: bool) -> list[str]:
    """The `raynet start` flags of every Ray node we start: no log monitor, and without the
    dashboard neither its process nor the full dashboard agent."""
    return [*NO_LOG_MONITOR, *([] if dashboard else [NO_DASHBOARD])]


def main() -> None:
    """`python -m rgrid_service.raynet start ...`: the `ray` CLI with loopback pinned.

    Two switches of ours, for parts the grid does not use and `ray start` cannot leave out:
    `--no-ray-client-server` starts a head without the Ray client server (Ray starts one whenever
    grpc is installed); `--no-dashboard` starts no dashboard process on a head (`--include-dashboard
    false` still starts one, to serve usage stats) and each node's dashboard agent in Ray's minimal
    mode (no HTTP server, no modules: rgrid_service.rayagent), as a `pip install ray` without
    extras would."""
    pin_loopback()
    import ray.scripts.scripts as scripts

    if NO_CLIENT_SERVER in sys.argv:
        sys.argv.remove(NO_CLIENT_SERVER)
        scripts.get_ray_client_dependency_error = lambda: ImportError("the Ray client server is not wanted")
    if NO_DASHBOARD in sys.argv:
        sys.argv.remove(NO_DASHBOARD)
        leave_out_dashboard()
    sys.argv[0] = "ray"
    scripts.main()


def leave_out_dashboard() -> None:
    """No dashboard process on a head, and every agent this node starts without modules
    (rgrid_service.rayagent), as Ray does when its dashboard extras are not installed."""
    import ray._private.node as node
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray._private.utils as utils

    def no_api_server(self, *, include_dashboard, raise_on_failure) -> None:
        self._webui_url = None

    node.Node.start_api_server = no_api_server
    utils.get_dashboard_dependency_error = lambda: ImportError("the Ray dashboard is not wanted")
    python_command = services._build_python_executable_command_memory_profileable

    def agent_without_modules(component: str, session_dir: str, unbuffered: bool = True) -> list[str]:
        command = python_command(component, session_dir, unbuffered)
        if component == ray_constants.PROCESS_TYPE_DASHBOARD_AGENT:
            command += ["-m", "rgrid_service.rayagent"]
        return command

    services._build_python_executable_command_memory_profileable = agent_without_modules


# Ray's own periodic work, set for every Ray process we start (Ray reads RAY_<name> at start).
# A value already in the environment wins, so each stays configuration.
LEAN_RAY_SETTINGS = {
    # Ray's metrics feed its dashboard and Prometheus export; the grid's are its own (orchestrator).
    "RAY_enable_metrics_collection": "0",
    # Task events feed Ray's state API and dashboard; the grid's run states live in its database.
    "RAY_task_events_report_interval_ms": "0",
    # The raylet's debug_state.txt, rewritten every 10 s.
    "RAY_debug_dump_period_milliseconds": "0",
    # Per-event-loop handler statistics, kept for the debug dump and metrics.
    "RAY_event_stats": "0",
    # The raylet's memory monitor (its OOM killer) looks 4 times a second; the sandbox has its own
    # memory limit, so once a second is enough.
    "RAY_memory_monitor_refresh_ms": "1000",
    # Each node's agents watch their raylet through a pipe instead of asking psutil every 0.4 s.
    "RAY_enable_pipe_based_agent_to_parent_health_check": "1",
    # How often the raylet looks for idle workers to end (default 0.2 s) and for a reason to
    # collect garbage cluster-wide (default 0.1 s).
    "RAY_kill_idle_workers_interval_ms": "1000",
    "RAY_raylet_check_gc_period_milliseconds": "1000",
}



def new_token() -> str:
    """A cluster token as Ray makes one (`ray get-auth-token --generate`): 256 random bits, hex."""
    return secrets.token_hex(32)


def write_token(path: Path, token: str) -> None:
    """The token into `path`, readable by its owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    tmp.replace(path)


def token_env(token_file: str | Path) -> dict[str, str]:
    """What turns Ray's token authentication on for a process (Ray reads these at start)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def use_token(token_file: str | Path) -> None:
    """Token authentication for this process's own driver (ray.init), even if Ray was imported
    (and its configuration read) before: what Ray itself does when it turns token mode on."""
    os.environ.update(token_env(token_file))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ray_process_env(base: dict[str, str]) -> dict[str, str]:
    """Environment for every Ray process we start: token authentication (the token file that
    `base` names in RGRID_RAY_TOKEN_FILE), no usage stats, Ray's periodic work the grid does not
    need left out (LEAN_RAY_SETTINGS, unless `base` sets them), and no way off the machine.

    Ray's dashboard probes cloud metadata (169.254.169.254) over `requests` even with usage stats
    off; pointing HTTP(S) proxies at a closed loopback port makes such probes fail on 127.0.0.1.
    """
    if not base.get(TOKEN_FILE_VAR):
        raise ValueError(f"{TOKEN_FILE_VAR} is not set: every Ray process of the grid runs with Ray's token "
                         "authentication, so name the file holding the cluster's token.")
    env = dict(base)
    env.pop("RAY_AUTH_TOKEN", None)
    env.update(token_env(base[TOKEN_FILE_VAR]))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    for name, value in LEAN_RAY_SETTINGS.items():
        env.setdefault(name, value)
    dead = "http://127.0.0.1:9"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[var] = dead
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


if __name__ == "__main__":
    main()

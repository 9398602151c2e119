"""How a worker starts: one command and one environment, for a local process and for a server.

`worker_launch()` says what a worker runs; the `process` fleet spawns exactly that, and
`render_cloud_init()` writes exactly that into a server's user_data (an environment file and a
systemd unit around the same command). A test compares the two. A launch with RGRID_DOCKER_HOST
(the control plane's) also gets the server's own Docker engine, started before the worker and
allowed to pull from the control plane's registry over the private network.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from rgrid_core.constants import SLOTS_PER_WORKER

from ..settings import ServiceSettings

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud-init" / "worker.yaml"
WORKER_COMMAND = ("python3", "-m", "rgrid_runner.node")
ENV_FILE = "/etc/rgrid/worker.env"
UNIT_FILE = "/etc/systemd/system/rgrid-worker.service"
DOCKER_CONFIG = "/etc/docker/daemon.json"
DOCKER_UNIT = "docker.service"
INSTALL_DIR = "/opt/rgrid/venv"
RAY_TOKEN_VAR = "RGRID_RAY_AUTH_TOKEN"

# The settings a worker reads (rgrid_runner.settings.WorkerSettings: agent, runner, sandbox); nothing
# that only the control plane needs. No database URL, no store keys: a worker reaches the worker API
# with its own token and moves files through presigned URLs.
WORKER_SETTINGS = (
    "ray_address", "ray_dashboard", "heartbeat_interval_seconds", "dead_after_seconds", "api_outage_budget_seconds",
    "api_unreachable_budget_seconds", "log_flush_interval_seconds", "lease_check_interval_seconds", "log_limit_bytes",
    "sandbox_memory_mb", "sandbox_max_processes", "sandbox_max_file_mb", "sandbox_niceness", "work_root", "input_cache_mb",
    "docker_host", "image_registry",
)


@dataclass(frozen=True)
class WorkerLaunch:
    argv: tuple[str, ...]  # argv[0] is looked up on PATH (the install's bin directory first)
    env: dict[str, str]  # added to the machine's environment


NO_WORKER_API_URL = ("RGRID_WORKER_API_URL is not set: workers would not know where the API is. Set it to the URL "
                     "workers reach the API at (the control plane's http://<private ip>:8000; the local grid sets it).")


def launch_problem(settings: ServiceSettings) -> str | None:
    """Why no worker can be started with these settings (a sentence), or None."""
    from ..secrets import MissingSecretKey, keys_for

    try:
        keys_for(settings)
    except MissingSecretKey as e:
        return str(e)
    return None if settings.worker_api_url else NO_WORKER_API_URL


def worker_launch(worker_id: str, settings: ServiceSettings, slots: int = SLOTS_PER_WORKER) -> WorkerLaunch:
    """The command and environment of worker `worker_id`: they depend on it and on the control
    plane's settings alone, never on the rest of the fleet. Its worker token is derived from the
    control plane's secret, so rendering it again gives the same bytes (see rgrid_service.secrets)."""
    from ..secrets import keys_for

    if not settings.worker_api_url:
        raise ValueError(NO_WORKER_API_URL)
    env = {"RGRID_WORKER_ID": worker_id, "RGRID_WORKER_SLOTS": str(slots),
           "RGRID_WORKER_TOKEN": keys_for(settings).worker_token(worker_id),
           "RGRID_API_URL": settings.worker_api_url}
    for name in WORKER_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            env[f"RGRID_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    if settings.ray_token_file:  # the Ray cluster's token: rgrid_runner.node moves it into a 0600 file
        env[RAY_TOKEN_VAR] = Path(settings.ray_token_file).read_text().strip()
    return WorkerLaunch(WORKER_COMMAND, env)


def env_file(env: dict[str, str]) -> str:
    for key, value in env.items():
        if "\n" in value or '"' in value:
            raise ValueError(f"{key} cannot go into an environment file: its value holds a newline or a quote.")
    return "".join(f'{k}="{v}"\n' if " " in v else f"{k}={v}\n" for k, v in env.items())


def systemd_unit(argv: tuple[str, ...], docker: bool = False) -> str:
    """The worker's unit; with docker, it starts after the engine and stops with it (a worker that
    lost its engine cannot run anything)."""
    command = shlex.join([f"{INSTALL_DIR}/bin/{argv[0]}", *argv[1:]])
    after = "network-online.target" + (f" {DOCKER_UNIT}\nRequires={DOCKER_UNIT}" if docker else "")
    return (
        f"[Unit]\nDescription=RGrid worker (agent and Ray node)\nAfter={after}\n"
        "Wants=network-online.target\n\n"
        f"[Service]\nEnvironmentFile={ENV_FILE}\nEnvironment=PATH={INSTALL_DIR}/bin:/usr/bin:/bin\n"
        f"ExecStart={command}\nKillMode=control-group\nRestart=no\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def docker_config(registry: str | None) -> str:
    """The worker engine's daemon.json: pulls from the control plane's registry, which speaks plain
    HTTP on the private network; no bridge and no iptables rules, since scripts run without a
    network (as the local grid's engine runs)."""
    settings = {"bridge": "none", "iptables": False, "insecure-registries": [registry] if registry else []}
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def render_cloud_init(launch: WorkerLaunch, package: str = "rgrid[service]") -> str:
    """The user_data of one worker server: the template with this worker's files filled in.
    Deterministic: the same launch renders the same bytes."""
    doc = yaml.safe_load(TEMPLATE.read_text())
    docker = bool(launch.env.get("RGRID_DOCKER_HOST"))
    files = {f["path"]: f for f in doc["write_files"]}
    files[ENV_FILE]["content"] = env_file(launch.env)
    files[UNIT_FILE]["content"] = systemd_unit(launch.argv, docker)
    if docker:
        files[DOCKER_CONFIG]["content"] = docker_config(launch.env.get("RGRID_IMAGE_REGISTRY"))
    else:  # the bubblewrap runtime alone: no engine on this server
        doc["packages"] = [p for p in doc["packages"] if p != "docker.io"]
        doc["write_files"] = [f for f in doc["write_files"] if f["path"] != DOCKER_CONFIG]
        doc["runcmd"] = [cmd for cmd in doc["runcmd"] if DOCKER_UNIT not in cmd]
    doc["runcmd"] = [[package if part == "rgrid[service]" else part for part in cmd] for cmd in doc["runcmd"]]
    return dump_cloud_config(doc)


def dump_cloud_config(doc: dict) -> str:
    """A cloud-config document as user_data, multi-line strings (scripts, units, environment files)
    as literal blocks so it reads like the files. Deterministic: the same document, the same bytes."""
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1000)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so user_data reads like the files."""


_BlockDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def launch_from_cloud_init(user_data: str) -> WorkerLaunch:
    """Read the command and environment back out of a rendered user_data (the inverse of
    render_cloud_init, for checking that both paths start the same worker)."""
    doc = yaml.safe_load(user_data)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    env = {}
    for line in files[ENV_FILE].splitlines():
        key, _, value = line.partition("=")
        env[key] = value[1:-1] if value.startswith('"') else value
    exec_line = next(line for line in files[UNIT_FILE].splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_line[len("ExecStart="):])
    return WorkerLaunch((Path(argv[0]).name, *argv[1:]), env)

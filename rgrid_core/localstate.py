"""The local grid's state file (`<home>/local/state.json`): what runs, where, and with which key.

The grid's starter writes it; the CLI reads it to find the API without importing the service, so
`rgrid status` on a warm grid costs one small file read.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class GridState:
    home: str
    api_url: str
    api_key: str
    ray_address: str
    dashboard_url: str
    s3_endpoint: str
    database_url: str
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid (= its process group)
    s3_command: list[str] = field(default_factory=list)
    fleet: str = "process"  # the fleet provider: process | pulumi
    cloud_url: str = ""  # with fleet=pulumi: the cloud API the hcloud provider talks to
    fleet_env: dict[str, str] = field(default_factory=dict)  # the fleet's RGRID_* settings (no secrets)
    # The RGRID_*/RAY_* settings of the environment the grid started in (no secrets), so that a
    # component restarted from another shell runs with the same timings and limits.
    started_env: dict[str, str] = field(default_factory=dict)
    wake_port: int = 0  # the loopback UDP port on which the orchestrator hears the API's queue bell
    orchestrator_metrics_url: str = ""  # the orchestrator's Prometheus endpoint (the API's is api_url + /metrics)
    # The Docker engine and the runtime images' registry the grid started for its workers (empty:
    # none; its workers run python:3.11 in bubblewrap), and the engine's folder (socket, data).
    docker_host: str = ""
    image_registry: str = ""
    docker_base: str = ""

    @property
    def path(self) -> Path:
        return state_path(Path(self.home))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def components(self) -> dict[str, bool]:
        return {name: alive(pid) for name, pid in self.pids.items()}


def state_path(home: Path) -> Path:
    return home / "local" / "state.json"


def load_state(home: Path) -> GridState | None:
    try:
        return GridState(**json.loads(state_path(home).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def is_running(home: Path) -> GridState | None:
    """The grid's state while every component it recorded is alive, else None. Workers are not
    components: they come and go with the fleet."""
    state = load_state(home)
    if state and state.pids and all(state.components().values()):
        return state
    return None


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

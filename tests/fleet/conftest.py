"""A local grid on the `pulumi` fleet: the real Pulumi engine and hcloud plugin converge the
worker_pool stack against the local Hetzner API, whose servers boot real Ray worker nodes.

Test-speed timings: provisioning every second, a billing period of 90 s with a 20 s margin, dead
after 15 s. The grid starts with no workers; the queue grows the fleet.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid

ENGINE = Path(__file__).resolve().parents[2] / "scripts" / "pulumi-engine.sh"
MAX_WORKERS = 10
BILLING_PERIOD, RETIRE_MARGIN = 90.0, 20.0

FLEET_ENV = {
    **GRID_ENV,
    "RGRID_PROVISION_INTERVAL_SECONDS": "1",
    "RGRID_BILLING_PERIOD_SECONDS": str(BILLING_PERIOD),
    "RGRID_RETIRE_MARGIN_SECONDS": str(RETIRE_MARGIN),
    "RGRID_HEARTBEAT_INTERVAL_SECONDS": "1",
    "RGRID_DEAD_AFTER_SECONDS": "15",
    "RGRID_SWEEP_INTERVAL_SECONDS": "1",
    "RGRID_BOOT_TIMEOUT_SECONDS": "150",
    "RGRID_FLEET_RETRY_SECONDS": "1",
    "RGRID_REDISPATCH_AFTER_SECONDS": "10",
    "RGRID_COST_INTERVAL_SECONDS": "1",
    "RGRID_METRICS_INTERVAL_SECONDS": "1",
}


def engine_available() -> None:
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    done = subprocess.run([str(ENGINE), "ensure"], capture_output=True, text=True)
    if done.returncode != 0:
        missing("the Pulumi engine", (done.stderr.strip().splitlines() or ["scripts/pulumi-engine.sh failed"])[-1])


@dataclass
class FleetGrid(Grid):
    @property
    def cloud(self) -> httpx.Client:
        return httpx.Client(base_url=self.state.cloud_url.removesuffix("/v1"), timeout=30)

    def servers(self) -> list[dict]:
        """The local cloud's servers, with their labels and status."""
        with self.cloud as c:
            return c.get("/_standin/servers").json()["servers"]

    def worker_servers(self) -> dict[str, dict]:
        return {s["labels"].get("rgrid-worker"): s for s in self.servers() if s["status"] != "deleting"}

    def execution(self, execution_id: str) -> dict:
        with self.api() as api:
            return api.get(f"/v1/executions/{execution_id}").json()

    def status(self, execution_id: str) -> str:
        return self.execution(execution_id)["status"]

    def db_now(self):
        from rgrid_service import lifecycle

        with self.engine().connect() as conn:
            return lifecycle.db_now(conn)

    def current_pid(self, component: str) -> int:
        from rgrid_core.localstate import load_state

        return load_state(self.home).pids[component]

    def fault(self, **spec) -> None:
        with self.cloud as c:
            c.post("/_standin/faults", json=spec).raise_for_status()

    def faults(self) -> list[dict]:
        with self.cloud as c:
            return c.get("/_standin/faults").json()["faults"]

    def clear_faults(self) -> None:
        with self.cloud as c:
            c.delete("/_standin/faults").raise_for_status()

    def workers(self) -> dict[str, dict]:
        """worker id -> its record (state, server id, created_at), for records not deleted."""
        from sqlalchemy import select

        from rgrid_service.db.models import Worker

        with self.engine().connect() as conn:
            rows = conn.execute(select(Worker.id, Worker.state, Worker.server_id, Worker.created_at,
                                       Worker.dead_reason)).mappings().all()
        return {r["id"]: dict(r) for r in rows}

    def live(self) -> dict[str, dict]:
        return {w: r for w, r in self.workers().items() if r["state"] in ("requested", "booting", "active", "draining")}

    def orchestrator_metrics(self) -> dict[tuple[str, tuple], float]:
        """The orchestrator's metrics, parsed: (name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        from rgrid_core.localstate import load_state

        text = httpx.get(load_state(self.home).orchestrator_metrics_url, timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def events(self) -> list[dict]:
        from sqlalchemy import select

        from rgrid_service.db.models import FleetEvent

        with self.engine().connect() as conn:
            return [dict(r) for r in conn.execute(select(FleetEvent.__table__).order_by(FleetEvent.id)).mappings()]

    def stack_servers(self) -> dict[str, str]:
        """worker id -> server id, as the worker_pool stack's state has them."""
        from rgrid_service.fleet.pulumi import PulumiFleet
        from rgrid_service.settings import ServiceSettings

        env = {k[len("RGRID_"):].lower(): v for k, v in self.fleet_env.items()}
        fleet = PulumiFleet.from_settings(ServiceSettings(_env_file=None, **env))
        return {s.worker_id: s.server_id for s in fleet.observe()}

    @property
    def fleet_env(self) -> dict[str, str]:
        from rgrid_service.localgrid import cloud

        return cloud.fleet_env(self.home, Path(self._bin_dir), self.state.cloud_url)

    _bin_dir: str = ""


@contextmanager
def pulumi_grid(prefix: str, env: dict[str, str], max_workers: int):
    """A local grid on the pulumi fleet with no workers yet, taken down and removed afterwards."""
    from rgrid_service.localgrid import grid as localgrid

    engine_available()
    home, state = start_test_grid(prefix, env, fleet="pulumi", workers=0, max_workers=max_workers)
    grid = FleetGrid(home, state)
    grid._bin_dir = subprocess.run([str(ENGINE), "ensure"], capture_output=True, text=True,
                                   check=True).stdout.strip().splitlines()[-1]
    try:
        yield grid
    finally:
        localgrid.down(home)
        remove_grid_dirs(home)


@pytest.fixture(scope="module")
def fleet_grid():
    with pulumi_grid("rgf-", FLEET_ENV, MAX_WORKERS) as grid:
        yield grid


def log_tail(grid: Grid, name: str, n: int = 4000) -> str:
    path = grid.home / "local" / "logs" / name
    return path.read_text(errors="replace")[-n:] if path.exists() else f"(no {name})"


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

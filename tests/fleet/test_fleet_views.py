"""`rgrid fleet preview`, `rgrid fleet history` and `rgrid workers` on a pulumi-fleet grid: the
real engine's preview of the worker_pool stack against the local Hetzner, priced from the table.

The grid starts with an orchestrator that does not provision (its interval is an hour), so the
preview sees a queued run before anything acts on it; then an orchestrator that provisions every
second takes over, and the history shows the update it ran.
"""
from __future__ import annotations

import json
import os
import uuid

import pytest

from rgrid_core.localstate import load_state
from rgrid_service.localgrid import grid as localgrid
from rgrid_service.localgrid.procs import stop_groups
from tests.conftest import wait_until

from .conftest import FLEET_ENV, FleetGrid, log_tail, pulumi_grid

SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept', sys.argv[1])\n"
IDLE_ORCHESTRATOR = {**FLEET_ENV, "RGRID_PROVISION_INTERVAL_SECONDS": "3600"}


@pytest.fixture(scope="module")
def quiet_grid():
    with pulumi_grid("rgp-", IDLE_ORCHESTRATOR, max_workers=3) as grid:
        yield grid


def cli_json(grid: FleetGrid, *args: str):
    done = grid.rgrid(*args, "--json", timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def restart_orchestrator(grid: FleetGrid, env: dict[str, str]) -> None:
    state = load_state(grid.home)
    stop_groups([state.pids["orchestrator"]], grace=5)
    localgrid.start_orchestrator(state, {**localgrid.service_env_for(state), **env})


def test_preview_shows_one_priced_create_and_the_history_shows_the_update(quiet_grid: FleetGrid):
    grid = quiet_grid
    empty = cli_json(grid, "fleet", "preview")
    assert empty["provider"] == "hetzner" and empty["actions"] == [] and empty["servers"] == []
    assert empty["cost"] == {"now_hourly_eur": 0.0, "hourly_eur": 0.0, "monthly_eur": 0.0, "prices_as_of": [],
                             "missing": []}

    ex = grid.submit(SLEEP, ["1"])
    view = cli_json(grid, "fleet", "preview")
    assert view["queued"] == 1 and view["trigger"] == "provisioning", view
    [action] = view["actions"]
    assert action["kind"] == "provision" and "1 queued against 0 free, 0 coming" in action["reason"]
    assert view["new_workers"] == ["w-1"] and view["existing"] == []
    assert view["diff"] == {"create": ["w-1"], "delete": [], "replace": []}  # the engine's own preview
    assert view["servers"] == [{"worker_id": "w-1", "change": "create", "server_type": "cx23", "hourly_eur": 0.0064,
                                "monthly_eur": 3.99}]
    assert view["cost"]["hourly_eur"] == 0.0064 and view["cost"]["monthly_eur"] == 3.99
    assert view["cost"]["prices_as_of"] == ["2026-04-15"]
    human = grid.rgrid("fleet", "preview", timeout=300)
    shown = " ".join(human.stdout.decode().split())
    assert human.returncode == 0 and "+ w-1 create cx23 €0.0064 €3.99" in shown, shown
    assert "change +€0.0064/h, +€3.99/month (prices of 2026-04-15)" in shown
    # It changed nothing: no worker record, no server, the run still queued.
    assert grid.workers() == {} and grid.servers() == [] and grid.status(ex) == "queued"
    assert grid.stack_servers() == {}

    # While an update holds the stack (its lock file, held by a live process), a preview is refused.
    locks = grid.home / "local" / "pulumi" / "backend" / ".pulumi" / "locks" / "organization" / "rgrid-worker-pool" / "workers"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / f"{uuid.uuid4()}.json"
    lock.write_text(json.dumps({"pid": os.getpid(), "username": "test", "hostname": "here",
                                "timestamp": "2026-11-30T02:00:00Z"}))
    try:
        busy = grid.rgrid("fleet", "preview", timeout=300)
    finally:
        lock.unlink()
    assert busy.returncode == 1
    assert "The fleet is being updated; try again in a few seconds." in " ".join(busy.stderr.decode().split())

    # An orchestrator that provisions takes over: one update creates w-1, and the run ends on it.
    restart_orchestrator(grid, FLEET_ENV)
    done = grid.wait_all([ex], timeout=600)
    assert done[ex]["status"] == "succeeded", log_tail(grid, "orchestrator.log")
    history = cli_json(grid, "fleet", "history")["updates"]
    [update] = [u for u in history["updates"] if u["diff"] and u["diff"]["create"]]
    assert update["trigger"] == "provisioning" and update["ok"] and update["summary"] == "created w-1"
    assert update["diff"] == {"create": ["w-1"], "delete": [], "replace": []} and update["duration_seconds"] > 0
    shown = grid.rgrid("fleet", "history").stdout.decode()
    assert "provisioning" in shown and "+w-1" in shown and "ok" in shown

    def w1_with_node():
        workers = {w["id"]: w for w in cli_json(grid, "workers")["workers"]}
        return workers.get("w-1") if workers.get("w-1", {}).get("ray_node_id") else None

    w1 = wait_until(w1_with_node, 60, "w-1 with its Ray node", step=1)
    assert (w1["server_type"], w1["location"], w1["state"]) == ("cx23", "fsn1", "active")
    assert w1["server_id"] == str(grid.worker_servers()["w-1"]["id"])

"""The operator's view of a process-fleet grid through the CLI: `rgrid workers` lists the real
workers with their slots in use and their Ray nodes, `rgrid fleet preview` shows a fleet content
with itself (and says the `local` server type has no price), and a worker retired by hand with
`rgrid workers retire` drains, goes in an update recorded with trigger `manual`, and the
minimum brings a new one."""
from __future__ import annotations

import json

import pytest

from rgrid_service.localgrid import grid as localgrid
from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid, wait_until

pytestmark = pytest.mark.grid

SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\n"
ENV = {**GRID_ENV, "RGRID_SWEEP_INTERVAL_SECONDS": "1", "RGRID_HEARTBEAT_INTERVAL_SECONDS": "1"}


@pytest.fixture(scope="module")
def views_grid():
    import shutil

    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    home, state = start_test_grid("rgv-", ENV, workers=2)
    try:
        yield Grid(home, state)
    finally:
        localgrid.down(home)
        remove_grid_dirs(home)


def cli_json(grid: Grid, *args: str):
    done = grid.rgrid(*args, "--json")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_workers_show_slots_in_use_and_ray_nodes(views_grid: Grid):
    grid = views_grid

    def both_with_nodes():
        workers = cli_json(grid, "workers")["workers"]
        return workers if len(workers) == 2 and all(w["ray_node_id"] and w["state"] == "active" for w in workers) else None

    workers = wait_until(both_with_nodes, 60, "both workers active with a Ray node recorded", step=1)
    import ray  # the grid's Ray: the recorded ids are the nodes that carry the workers' labels

    from rgrid_service.localgrid.layout import ray_token_file
    from rgrid_service.orchestrator import connect_ray

    connect_ray(grid.state.ray_address, str(ray_token_file(grid.home)))
    try:
        labelled = {n["Labels"].get("rgrid-worker"): n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    assert {w["id"]: w["ray_node_id"] for w in workers} == {w: labelled[w] for w in ("w-1", "w-2")}

    ex = grid.submit(SLEEP, ["20"])
    with grid.api() as api:
        running = wait_until(lambda: (e := api.get(f"/v1/executions/{ex}").json())["status"] == "running" and e,
                             60, "the run to start")
    view = cli_json(grid, "workers")
    used = {w["id"]: (w["slots_used"], w["slots"]) for w in view["workers"]}
    assert used[running["worker_id"]] == (1, 2) and sum(u for u, _ in used.values()) == 1
    shown = grid.rgrid("workers")
    assert shown.returncode == 0, shown.stderr.decode()
    rows = {line.split()[0]: line for line in shown.stdout.decode().splitlines() if line.startswith("w-")}
    for w in view["workers"]:
        assert w["ray_node_id"][:12] in rows[w["id"]] and f"{used[w['id']][0]}/2" in rows[w["id"]]
        assert 0 < w["paid_hour_left_seconds"] <= 3600 and w["last_heartbeat_at"].endswith("Z")
    with grid.api() as api:
        api.post(f"/v1/executions/{ex}/cancel")


def test_preview_of_a_content_fleet_and_a_worker_retired_by_hand(views_grid: Grid):
    grid = views_grid
    wait_until(lambda: all(w["slots_used"] == 0 for w in cli_json(grid, "workers")["workers"]), 60, "idle workers")
    preview = cli_json(grid, "fleet", "preview")
    assert preview["provider"] == "local" and preview["actions"] == [] and preview["trigger"] is None
    assert preview["diff"] == {"create": [], "delete": [], "replace": []}
    assert sorted(preview["existing"]) == sorted(preview["desired"]) == ["w-1", "w-2"]
    assert "no price for server type 'local'" in preview["cost"]["missing"][0]
    human = grid.rgrid("fleet", "preview")
    assert b"would change nothing" in human.stdout and b"no price for server type" in human.stderr

    retired = grid.rgrid("workers", "retire", "w-1")
    assert retired.returncode == 0 and b"w-1 is draining" in retired.stderr, retired.stderr

    def manual_update():
        updates = cli_json(grid, "fleet", "history")["updates"]["updates"]
        return next((u for u in updates if u["trigger"] == "manual"), None)

    update = wait_until(manual_update, 60, "the update that deletes w-1", step=1)
    assert update["ok"] and update["diff"] == {"create": [], "delete": ["w-1"], "replace": []}
    assert update["duration_seconds"] > 0
    # Below the minimum of 2 now: the next update brings a new worker, for provisioning (recorded once
    # the process fleet has seen its Ray node start).
    def w3_created():
        history = cli_json(grid, "fleet", "history")["updates"]["updates"]
        return next((u for u in history if u["diff"] and u["diff"]["create"] == ["w-3"]), None)

    created = wait_until(w3_created, 180, "the update that creates w-3", step=1)
    assert created["trigger"] == "provisioning" and created["ok"] and created["id"] > update["id"]
    assert "w-1" not in {w["id"] for w in cli_json(grid, "workers")["workers"]}
    shown = grid.rgrid("fleet", "history").stdout.decode()
    assert "manual" in shown and "-w-1" in shown and "+w-3" in shown

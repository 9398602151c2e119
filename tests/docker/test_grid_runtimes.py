"""`rgrid run --runtime NAME` end to end on a real local grid whose worker has Docker: the CLI, the
API, the run record and the worker, which pulled every catalogue image before it became active;
`rgrid runtimes` showing that worker holding every image."""
from __future__ import annotations

import pytest

from tests.conftest import GRID_ENV, Grid, remove_grid_dirs, start_test_grid, wait_for_active_workers

pytestmark = [pytest.mark.docker, pytest.mark.grid]

FIT = """import os, sys
os.environ["MPLCONFIGDIR"] = "/tmp/matplotlib"
import numpy as np, pandas as pd
frame = pd.read_csv(sys.argv[1])
slope = np.polyfit(frame.x, frame.y, 1)[0]
open("slope.txt", "w").write(f"{slope:.2f}")
print("slope", round(slope, 2))
"""


@pytest.fixture(scope="module")
def docker_local_grid(docker_grid):
    from rgrid_service.localgrid import grid as localgrid

    engine, registry = docker_grid
    env = {**GRID_ENV, "RGRID_DOCKER_HOST": engine.host, "RGRID_IMAGE_REGISTRY": registry.address}
    home, state = start_test_grid("rgk-", env, workers=1)
    grid = Grid(home, state)
    try:
        wait_for_active_workers(grid, 1)
        yield grid
    finally:
        localgrid.down(home)
        remove_grid_dirs(home)


def test_runtime_picked_on_the_command_line_runs_on_the_worker(docker_local_grid, tmp_path):
    grid = docker_local_grid
    (tmp_path / "fit.py").write_text(FIT)
    (tmp_path / "points.csv").write_text("x,y\n" + "".join(f"{x},{2 * x + 1}\n" for x in range(10)))
    r = grid.rgrid("run", "--runtime", "python-datascience", "fit.py", "points.csv", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert b"slope 2.0" in r.stdout
    [slope] = (tmp_path / "rgrid-outputs").glob("ex-*/slope.txt")
    assert slope.read_text() == "2.00"
    with grid.api() as api:
        record = api.get(f"/v1/executions/{slope.parent.name}").json()
    assert record["runtime"] == "python-datascience" and record["status"] == "succeeded"


def test_a_node_script_runs_in_node_20(docker_local_grid, tmp_path):
    grid = docker_local_grid
    (tmp_path / "hello.js").write_text("console.log('node', process.version.split('.')[0], process.argv[2]);\n")
    r = grid.rgrid("run", "--runtime", "node:20", "hello.js", "there", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip() == b"node v20 there"


def test_the_worker_pulled_every_image_before_it_became_active(docker_local_grid):
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_service.localgrid.layout import logs_dir

    logs = "".join(p.read_text(errors="replace") for p in logs_dir(docker_local_grid.home).glob("*w-*.log"))
    assert f"rgrid: {len(CATALOGUE)} runtime images present" in logs


def test_rgrid_runtimes_shows_every_image_on_the_docker_worker(docker_local_grid):
    import json

    from rgrid_core.runtimes import CATALOGUE

    r = docker_local_grid.rgrid("runtimes", "--json")
    assert r.returncode == 0, r.stderr.decode()
    views = {v["name"]: v for v in json.loads(r.stdout)["runtimes"]}
    assert list(views) == list(CATALOGUE)
    for name, view in views.items():
        assert (view["workers_ready"], view["workers_active"], view["workers_missing"]) == (1, 1, []), view
        assert view["image_tag"] == CATALOGUE[name].tag and view["size_bytes"] > 10_000_000
    table = docker_local_grid.rgrid("runtimes", env={"COLUMNS": "250"})
    assert table.returncode == 0 and table.stdout.decode().count("every worker") == len(CATALOGUE)

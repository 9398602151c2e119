"""On the real local grid the orchestrator dispatches when the API rings the queue's bell, not on
a timer: with every safety tick (dispatch, idle, sweep) minutes away, runs submitted through the
API still run at once, one after another."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid

pytestmark = pytest.mark.grid

TICKS_AWAY = {"RGRID_DISPATCH_INTERVAL_SECONDS": "300", "RGRID_DISPATCH_IDLE_INTERVAL_SECONDS": "300",
              "RGRID_SWEEP_INTERVAL_SECONDS": "300"}


@pytest.fixture(scope="module")
def bell_grid():
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    from rgrid_service.localgrid import grid as localgrid

    home, state = start_test_grid("rgq-", {**GRID_ENV, **TICKS_AWAY}, workers=1)
    yield Grid(home, state)
    localgrid.down(home)
    remove_grid_dirs(home)


def test_runs_are_dispatched_on_the_bell_with_every_safety_tick_minutes_away(bell_grid):
    assert bell_grid.state.wake_port
    for n in range(3):  # each one alone: nothing else is queued to carry it along
        ex_id = bell_grid.submit(f"print('rung {n}')\n")
        done = bell_grid.wait_all([ex_id], timeout=120)  # well inside the 300 s ticks
        assert done[ex_id]["status"] == "succeeded", done[ex_id]

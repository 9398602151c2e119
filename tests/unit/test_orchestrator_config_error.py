"""An orchestrator that cannot launch workers says why and stops with CONFIG_ERROR, so its
supervisor does not start it again every 30 s (a real `python -m rgrid_service.orchestrator`)."""
import os
import subprocess
import sys

from rgrid_service.orchestrator.__main__ import CONFIG_ERROR


def test_a_fleet_that_cannot_launch_workers_stops_the_supervisor(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_RAY_ADDRESS="127.0.0.1:9", RGRID_RAY_TOKEN_FILE=str(tmp_path / "token"),
               RGRID_LOCAL_GRID_HOME=str(tmp_path), RGRID_DATABASE_URL=f"sqlite:///{tmp_path}/rgrid.db",
               RAY_USAGE_STATS_ENABLED="0")
    done = subprocess.run([sys.executable, "-m", "rgrid_service.orchestrator"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == CONFIG_ERROR, done.stderr
    assert "The orchestrator cannot start workers: " in done.stderr
    assert "starting it again" not in done.stderr

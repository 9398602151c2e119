"""Starting a local grid as a new user would: a long home folder, both cores busy.

Ray keeps its sockets under its temp dir, and a Unix socket path holds at most 107 bytes: with the
temp dir inside a long home, Ray's dashboard and client server failed and the head killed itself.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import GRID_ENV, RGRID, missing, remove_grid_dirs

pytestmark = pytest.mark.grid


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


@pytest.fixture
def long_home():
    base = Path(tempfile.mkdtemp(prefix="rgl-", dir="/tmp"))
    home = base / ("a-rather-long-folder-name-like-a-real-users-home-" + "x" * 20) / ".rgrid"
    assert len(str(home)) >= 90
    yield home
    subprocess.run([sys.executable, "-m", "rgrid_service.localgrid", "down", "--home", str(home)],
                   capture_output=True, timeout=120)
    remove_grid_dirs(home)
    shutil.rmtree(base, ignore_errors=True)


def test_a_grid_starts_in_a_long_home_with_both_cores_busy(long_home, tmp_path):
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    env = {**os.environ, **GRID_ENV, "RGRID_HOME": str(long_home)}
    env.pop("RGRID_API_URL", None)
    busy = [multiprocessing.Process(target=_spin, args=(time.time() + 240,)) for _ in range(os.cpu_count() or 2)]
    for p in busy:
        p.start()
    try:
        script = tmp_path / "hello.py"
        script.write_text("import sys\nprint('hello from', sys.argv[1])\n")
        run = subprocess.run([RGRID, "run", str(script), "the grid"], env=env, capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)
    finally:
        for p in busy:
            p.terminate()
            p.join()
    assert run.returncode == 0, run.stderr
    assert "hello from the grid" in run.stdout
    assert "Local grid started" in run.stderr
    ray_dir = (long_home / "local" / "ray").resolve()
    assert len(str(ray_dir)) <= 40 and (long_home / "local" / "ray").is_symlink()
    sockets = list(ray_dir.glob("session_*/sockets/*"))
    assert sockets and all(len(str(s).encode()) < 107 for s in sockets)
    processes = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    ours = [line for line in processes.splitlines() if str(ray_dir) in line]
    assert ours and not any("ray.util.client.server" in line or "autoscaler/_private/monitor.py" in line
                            for line in ours)

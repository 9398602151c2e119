"""Following a run on the real local grid through a connection that is cut mid-run: `rgrid run`
and `rgrid logs -f` resume from their cursor and print every line exactly once, and exit with the
script's code."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import RGRID
from tests.tcpcut import CuttableProxy

pytestmark = pytest.mark.grid

LINES = 40
COUNT = f"""
import sys, time
for i in range({LINES}):
    print(f"line {{i:03d}}", flush=True)
    if i == 20:
        print("half way", file=sys.stderr, flush=True)
    time.sleep(0.1)
sys.exit(3)
"""
EXPECTED = "".join(f"line {i:03d}\n" for i in range(LINES))


def through(grid, proxy: CuttableProxy) -> dict:
    """The CLI's environment with its API reached through the proxy (as a configured control plane)."""
    return {**grid.env, "RGRID_API_URL": proxy.url, "RGRID_API_KEY": grid.state.api_key}


def follow_cutting(argv: list[str], env: dict, cwd: Path, proxy: CuttableProxy, cut_at: set[int]):
    """Run the CLI; each time its stdout reaches a line number in cut_at, cut its connection.
    Returns (stdout, stderr, exit code, connections cut)."""
    proc = subprocess.Popen([RGRID, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    out, cuts = [], 0
    try:
        for line in proc.stdout:
            out.append(line)
            if len(out) in cut_at:
                cuts += proc.poll() is None and proxy.cut()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return b"".join(out).decode(), b"".join(errors).decode(), code, cuts


def test_rgrid_run_resumes_after_its_connection_is_cut_and_prints_each_line_once(grid, tmp_path):
    (tmp_path / "count.py").write_text(COUNT)
    api = urlsplit(grid.state.api_url)
    proxy = CuttableProxy((api.hostname, api.port))
    try:
        out, err, code, cuts = follow_cutting(["run", "--no-download", "count.py"], through(grid, proxy), tmp_path,
                                              proxy, cut_at={2, 12, 25})
    finally:
        proxy.close()
    assert out == EXPECTED, err
    assert code == 3, err
    assert "half way" in err and "exited with code 3" in err
    assert cuts >= 2, (cuts, err)  # the stream's connection really was cut


def test_logs_follow_resumes_after_its_connection_is_cut(grid, tmp_path):
    ex_id = grid.submit(COUNT, name="count.py")
    api = urlsplit(grid.state.api_url)
    proxy = CuttableProxy((api.hostname, api.port))
    try:
        out, err, code, cuts = follow_cutting(["logs", "-f", ex_id], through(grid, proxy), tmp_path, proxy,
                                              cut_at={1, 12, 30})
    finally:
        proxy.close()
    assert out == EXPECTED, err
    assert code == 3 and cuts >= 2, (code, cuts, err)
    again = grid.rgrid("logs", ex_id)  # the stored log is the same bytes
    assert again.stdout.decode() == EXPECTED

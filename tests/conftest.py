"""Shared fixtures: a real local grid (SeaweedFS, Ray head + 2 worker nodes, API, orchestrator)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REQUIRE_ALL = os.environ.get("RGRID_REQUIRE_ALL") == "1"
RGRID = str(Path(sys.executable).with_name("rgrid"))

# Test-speed timings, inherited by every grid process.
GRID_ENV = {
    "RGRID_DISPATCH_INTERVAL_SECONDS": "0.2",
    "RGRID_LOG_FLUSH_INTERVAL_SECONDS": "0.1",
    "RGRID_LEASE_CHECK_INTERVAL_SECONDS": "0.3",
    "RGRID_LOG_LIMIT_BYTES": str(1024 * 1024),
    "RGRID_SANDBOX_MEMORY_MB": "512",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def missing(what: str, how: str):
    message = f"{what} is not available: {how}"
    if REQUIRE_ALL:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Grid:
    home: Path
    state: object

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RGRID_API_URL", None)
        env.pop("RGRID_API_KEY", None)
        env["RGRID_HOME"] = str(self.home)
        return env

    def rgrid(self, *args: str, cwd: Path | None = None, timeout: float = 120, input: bytes | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RGRID, *args], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
            timeout=timeout, input=input,
        )

    def api(self, key: str | None = "own") -> httpx.Client:
        headers = {}
        if key == "own":
            headers["Authorization"] = f"Bearer {self.state.api_key}"
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.state.api_url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def grid():
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    from rgrid_service.localgrid import grid as localgrid

    # Ray's socket paths must stay short: keep the grid home directly under /tmp.
    home = Path(tempfile.mkdtemp(prefix="rgt-", dir="/tmp"))
    saved = {k: os.environ.get(k) for k in GRID_ENV}
    os.environ.update(GRID_ENV)
    try:
        state = localgrid.up(home, workers=2)
    except Exception:
        for name in ("seaweedfs", "ray-head", "api", "orchestrator", "w-1", "w-2"):
            log = home / "local" / "logs" / f"{name}.log"
            if log.exists():
                print(f"---- {log}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield Grid(home, state)
    localgrid.down(home)
    shutil.rmtree(home, ignore_errors=True)

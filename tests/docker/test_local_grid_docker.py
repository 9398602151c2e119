"""`rgrid local up` on a machine that can run Docker: the grid starts its own engine and the
runtime images' registry (building any image the cache lacks), its worker pulls every image before
it becomes active and runs a script in a container, and `rgrid local down` leaves none of it running."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import GRID_ENV, RGRID, missing, remove_grid_dirs

pytestmark = [pytest.mark.docker, pytest.mark.grid]


def named_processes(text: str) -> list[str]:
    """Command lines of running processes that name `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in line:
                found.append(line)
    return found


@pytest.fixture(scope="module")
def home():
    from rgrid_service.localgrid.docker import why_not
    from rgrid_service.settings import ServiceSettings

    reason = why_not(ServiceSettings(_env_file=None, local_docker=True, docker_host=None))
    if reason:
        missing("Docker", reason)
    home = Path(tempfile.mkdtemp(prefix="rgk-", dir="/tmp"))
    yield home
    subprocess.run([RGRID, "local", "down"], env=env_for(home), capture_output=True, timeout=180)
    remove_grid_dirs(home)


def env_for(home: Path) -> dict[str, str]:
    env = {**os.environ, **GRID_ENV, "RGRID_HOME": str(home)}
    for name in ("RGRID_API_URL", "RGRID_API_KEY", "RGRID_DOCKER_HOST", "RGRID_IMAGE_REGISTRY"):
        env.pop(name, None)
    env["RGRID_LOCAL_DOCKER"] = "1"  # GRID_ENV turns it off for the other grids
    return env


def test_local_up_starts_an_engine_and_the_registry_and_its_worker_runs_in_a_container(home, tmp_path):
    from rgrid_core.localstate import load_state
    from rgrid_core.runtimes import CATALOGUE

    up = subprocess.run([RGRID, "local", "up", "--workers", "1"], env=env_for(home), capture_output=True,
                        text=True, timeout=1200)
    assert up.returncode == 0, up.stderr
    assert "Docker     engine unix://" in up.stdout  # the status `local up` ends with
    state = load_state(home)
    assert state.docker_host.startswith("unix://") and state.components()["docker"]
    assert state.components()["registry"]
    for runtime in CATALOGUE.values():  # every image is in the registry the worker pulls from
        answer = httpx.head(f"http://{state.image_registry}/v2/{runtime.repository}/manifests/{runtime.tag}",
                            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert answer.status_code == 200, runtime.name

    (tmp_path / "hello.js").write_text("console.log('node', process.version.split('.')[0], process.argv[2]);\n")
    run = subprocess.run([RGRID, "run", "--runtime", "node:20", "hello.js", "there"], env=env_for(home),
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "node v20 there"
    from rgrid_service.localgrid.layout import logs_dir

    logs = "".join(p.read_text(errors="replace") for p in logs_dir(home).glob("*w-*.log"))
    assert f"rgrid: {len(CATALOGUE)} runtime images present" in logs  # before its first heartbeat


def test_local_down_stops_the_engine_the_registry_and_what_the_engine_ran(home):
    from rgrid_core.localstate import alive, load_state

    state = load_state(home)
    assert state is not None and state.docker_base
    pids = [state.pids["docker"], state.pids["registry"]]
    down = subprocess.run([RGRID, "local", "down"], env=env_for(home), capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in pids)
    assert named_processes(state.docker_base) == []  # no containerd, no shim, no container

"""The local grid's Docker (rgrid_service.localgrid.docker): when it starts one, what its workers
learn of it, what a person is told when it does not, and how a stubborn engine is stopped."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rgrid_core.localstate import GridState, alive
from rgrid_service.localgrid import docker, grid
from rgrid_service.settings import ServiceSettings


def settings(**values) -> ServiceSettings:
    return ServiceSettings(_env_file=None, **values)


def state(home: Path, **values) -> GridState:
    return GridState(home=str(home), api_url="http://127.0.0.1:1", api_key="", ray_address="127.0.0.1:2",
                     dashboard_url="", s3_endpoint="127.0.0.1:3", database_url="sqlite://", **values)


@pytest.fixture
def docker_installed(monkeypatch):
    monkeypatch.setattr(docker.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(docker.os, "geteuid", lambda: 0)


def test_docker_starts_where_the_machine_can_run_it(docker_installed):
    assert docker.why_not(settings()) is None
    assert docker.why_not(settings(local_docker=True)) is None


def test_no_docker_when_switched_off_missing_not_root_or_the_users_own(docker_installed, monkeypatch):
    assert "RGRID_LOCAL_DOCKER is off" in docker.why_not(settings(local_docker=False))
    assert "RGRID_DOCKER_HOST" in docker.why_not(settings(docker_host="unix:///run/docker.sock"))
    monkeypatch.setattr(docker.os, "geteuid", lambda: 1000)
    assert "needs root" in docker.why_not(settings())
    monkeypatch.setattr(docker.shutil, "which", lambda tool: None if tool == "docker-registry" else "/x")
    assert docker.why_not(settings()).startswith("Docker is not installed (docker-registry)")


def test_workers_learn_the_engine_and_the_registry_only_when_the_grid_started_them(tmp_path):
    none = state(tmp_path)
    assert "RGRID_DOCKER_HOST" not in grid.service_env(none, ("k", "s"))
    started = state(tmp_path, docker_host="unix:///tmp/d/docker.sock", image_registry="127.0.0.1:5999")
    env = grid.service_env(started, ("k", "s"))
    assert env["RGRID_DOCKER_HOST"] == "unix:///tmp/d/docker.sock" and env["RGRID_IMAGE_REGISTRY"] == "127.0.0.1:5999"
    # ... and so does every worker the process fleet launches (the settings it hands a worker).
    from rgrid_service.fleet.launch import WORKER_SETTINGS

    assert {"docker_host", "image_registry"} <= set(WORKER_SETTINGS)


def test_a_grid_that_cannot_start_docker_says_why_and_keeps_bubblewrap(tmp_path, docker_installed, monkeypatch):
    monkeypatch.delenv("RGRID_LOCAL_DOCKER", raising=False)
    monkeypatch.delenv("RGRID_DOCKER_HOST", raising=False)

    def fails(home, on_step):
        raise docker.DockerUnavailable("The Docker engine did not start: overlay2: no.")

    monkeypatch.setattr(docker, "start", fails)
    notes, s = [], state(tmp_path)
    grid.start_docker(s, lambda step: None, notes.append)
    assert notes == ["No Docker for the workers (The Docker engine did not start: overlay2: no): "
                     "scripts run in bubblewrap (python:3.11 only)."]
    assert s.docker_host == "" and "docker" not in s.pids
    # Asked for, it fails the start instead.
    monkeypatch.setenv("RGRID_LOCAL_DOCKER", "1")
    with pytest.raises(docker.DockerUnavailable, match="overlay2"):
        grid.start_docker(state(tmp_path), lambda step: None, notes.append)
    monkeypatch.setattr(docker.os, "geteuid", lambda: 1000)
    with pytest.raises(docker.DockerUnavailable, match="RGRID_LOCAL_DOCKER asks for Docker, but .* needs root"):
        grid.start_docker(state(tmp_path), lambda step: None, notes.append)


def test_switched_off_it_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RGRID_LOCAL_DOCKER", "0")
    notes = []
    grid.start_docker(state(tmp_path), lambda step: None, notes.append)
    assert notes == []


def test_the_engine_keeps_its_images_in_the_cache_unless_another_grid_runs_it(tmp_path, monkeypatch):
    cache = Path(tempfile.mkdtemp(prefix="rgc-", dir="/tmp"))  # a short path, as the engine's sockets need
    monkeypatch.setenv("RGRID_CACHE_DIR", str(cache))
    home = tmp_path / "home"
    shared = cache / "local-docker"
    try:
        check_engine_base(home, shared)
        monkeypatch.setenv("RGRID_CACHE_DIR", str(tmp_path / ("long" * 20)))  # too long for the sockets
        assert docker.engine_base(home).name.startswith("rgrid-docker-")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def check_engine_base(home: Path, shared: Path) -> None:
    assert docker.engine_base(home) == shared
    shared.mkdir(parents=True)
    (shared / "docker.pid").write_text("999999999")  # a dead engine's pid file
    assert docker.engine_base(home) == shared
    (shared / "docker.pid").write_text(str(os.getpid()))  # a running one
    own = docker.engine_base(home)
    assert own != shared and own.name.startswith("rgrid-docker-")
    assert own == docker.engine_base(home)  # the same grid gets the same folder


STUBBORN = """import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_an_engine_that_ignores_sigterm_is_killed_with_what_names_its_folder(tmp_path):
    """stop(): SIGTERM, the grace, SIGKILL; then every process whose command line names the
    engine's folder (a containerd shim) and the processes under it (a container's)."""
    base = tmp_path / "engine"
    engine = subprocess.Popen([sys.executable, "-c", STUBBORN, str(base)], start_new_session=True,
                              stdout=subprocess.PIPE, text=True)
    shim = subprocess.Popen([sys.executable, "-c", STUBBORN, str(base)], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    under_shim = int(shim.stdout.readline())
    int(engine.stdout.readline())  # it ignores SIGTERM from here on
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        s = state(tmp_path, pids={"docker": engine.pid}, docker_base=str(base))
        docker.stop(s, grace=1.0)
        for proc in (engine, shim):
            assert proc.wait(5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while alive(under_shim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(under_shim)
        assert bystander.poll() is None  # a process that does not name the folder is left alone
    finally:
        for proc in (engine, shim, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if alive(under_shim):
            os.kill(under_shim, signal.SIGKILL)

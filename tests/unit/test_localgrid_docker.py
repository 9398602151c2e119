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
    assert docker.why_not(settings()) == "Docker is not installed; apt-get install docker-registry"


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
    with pytest.raises(docker.DockerUnavailable) as refused:
        grid.start_docker(state(tmp_path), lambda step: None, notes.append)
    # A failed start does not claim that scripts run in bubblewrap.
    assert str(refused.value) == ("RGRID_LOCAL_DOCKER asks for Docker, but the grid's own Docker engine needs root; "
                                  "start the grid as root.")
    # Not asked for: the note says what the workers do instead.
    monkeypatch.delenv("RGRID_LOCAL_DOCKER")
    notes.clear()
    grid.start_docker(state(tmp_path), lambda step: None, notes.append)
    assert notes == ["No Docker for the workers (the grid's own Docker engine needs root; start the grid as root): "
                     "scripts run in bubblewrap (python:3.11 only)."]


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


def disguised(argv: list[str], **kw) -> subprocess.Popen:
    """Python under another argv[0] (dockerd, a containerd shim), as /proc shows it; PYTHONHOME
    since the interpreter cannot find its library from a made-up name."""
    return subprocess.Popen(argv, executable=os.path.realpath(sys.executable), start_new_session=True,
                            env={**os.environ, "PYTHONHOME": sys.base_prefix}, **kw)


def fake_engine(base: Path) -> subprocess.Popen:
    """A process that looks like start()'s dockerd of `base` in /proc (argv[0] and --data-root)."""
    return disguised(["dockerd", "-c", STUBBORN, "--data-root", str(base / "data")], stdout=subprocess.PIPE, text=True)


def check_engine_base(home: Path, shared: Path) -> None:
    assert docker.engine_base(home) == shared
    shared.mkdir(parents=True)
    (shared / "docker.pid").write_text("999999999")  # a dead engine's pid file
    assert docker.engine_base(home) == shared
    (shared / "docker.pid").write_text(str(os.getpid()))  # a pid reused by a process that is no engine
    assert docker.engine_base(home) == shared
    engine = fake_engine(shared)
    try:
        (shared / "docker.pid").write_text(str(engine.pid))  # a running one
        own = docker.engine_base(home)
        assert own != shared and own.name.startswith("rgrid-docker-")
        assert own == docker.engine_base(home)  # the same grid gets the same folder
    finally:
        engine.kill()
        engine.wait()


STUBBORN = """import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_an_engine_that_ignores_sigterm_is_killed_with_what_names_its_folder(tmp_path):
    """stop(): SIGTERM, the grace, SIGKILL; then every containerd shim with a path in the engine's
    folder as an argument, and the processes under it (a container's). Processes that merely
    mention the folder are left alone."""
    base = tmp_path / "engine"
    engine = fake_engine(base)
    shim = disguised(["containerd-shim-runc-v2", "-c", STUBBORN, "-address", str(base / "exec/c.sock")],
                     stdout=subprocess.PIPE, text=True)
    under_shim = int(shim.stdout.readline())
    int(engine.stdout.readline())  # it ignores SIGTERM from here on
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(base)],
                                 start_new_session=True)
    neighbour = disguised(["containerd-shim-runc-v2", "-c", "import time; time.sleep(120)",
                           "-address", f"{base}-other/exec/c.sock"])
    try:
        s = state(tmp_path, pids={"docker": engine.pid}, docker_base=str(base))
        docker.stop(s, grace=1.0)
        for proc in (engine, shim):
            assert proc.wait(5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while alive(under_shim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(under_shim)
        assert bystander.poll() is None  # no containerd: left alone though it names the folder
        assert neighbour.poll() is None  # another engine's shim, its folder's name a prefix of ours
    finally:
        for proc in (engine, shim, bystander, neighbour):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if alive(under_shim):
            os.kill(under_shim, signal.SIGKILL)


def test_a_state_whose_engine_pid_is_now_another_process_signals_nothing(tmp_path):
    """An old state file's engine pid reused by another process (or an engine of another folder):
    begin_stop and stop leave it alone."""
    other = fake_engine(tmp_path / "another-engine")
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        for pid in (other.pid, plain.pid):
            s = state(tmp_path, pids={"docker": pid}, docker_base=str(tmp_path / "engine"))
            docker.begin_stop(s)
            docker.stop(s, grace=0.2)
        time.sleep(0.3)
        assert other.poll() is None and plain.poll() is None
        assert docker.is_engine(other.pid, tmp_path / "another-engine")
        assert not docker.is_engine(plain.pid, tmp_path / "engine")
    finally:
        for proc in (other, plain):
            proc.kill()
            proc.wait()


def test_two_grids_choose_their_engine_folders_one_after_the_other(tmp_path, monkeypatch):
    """choosing() is held from the choice until the engine runs: a second grid waits for it."""
    import threading

    monkeypatch.setenv("RGRID_CACHE_DIR", str(tmp_path))
    order = []
    with docker.choosing():
        waiter = threading.Thread(target=lambda: (docker.choosing().__enter__(), order.append("second")))
        waiter.start()
        waiter.join(0.5)
        order.append("first done")
    waiter.join(5)
    assert order == ["first done", "second"]

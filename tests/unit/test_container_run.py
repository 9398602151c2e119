"""rgrid_runner.container and the runner's Docker path against a fake engine, for what a real one
cannot be made to do on demand: an engine lost while the script runs, a kill the engine refuses,
a container that never ends. (The real engine: tests/docker.)"""
from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import tempfile
import threading
from pathlib import Path

import docker
import pytest
import requests

from rgrid_core import workerwire as wire
from rgrid_runner import container, runner, sandbox
from rgrid_runner.runner import run_execution
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import WorkerClient
from tests.httpstandin import server  # noqa: F401 - the fixture

SCRIPT = b"print('hi')\n"


class FakeContainer:
    def __init__(self, name="c1", labels=None, wait=None, kill=None, state="ended"):
        self.id = self.name = name
        self.labels = labels or {}
        self._wait, self._kill = wait, kill
        # None: the engine does not answer; "ended": exited 0.
        self.state = {"Running": False, "ExitCode": 0, "OOMKilled": False} if state == "ended" else state
        self.attrs = {}
        self.killed = self.removed = 0
        self.ended = threading.Event()

    def start(self):
        pass

    def wait(self):
        return self._wait(self) if self._wait else {"StatusCode": 0}

    def reload(self):
        if self.state is None:
            raise requests.ConnectionError("engine gone")
        self.attrs = {"State": self.state}

    def kill(self):
        self.killed += 1
        if self._kill:
            self._kill(self)
        self.ended.set()

    def remove(self, force=False):
        self.removed += 1
        self.ended.set()


def frames(*parts: tuple[int, bytes]) -> bytes:
    """The engine's multiplexed log: per frame its stream (1 stdout, 2 stderr), length and bytes."""
    return b"".join(struct.pack(">BxxxL", stream, len(data)) + data for stream, data in parts)


class FakeAnswer:
    def __init__(self, body: bytes, broken: bool = False):
        self.raw = self
        self._body, self._broken = io.BytesIO(body), broken

    def read(self, n):
        data = self._body.read(n)
        if not data and self._broken:
            raise requests.ConnectionError("engine gone")
        return data

    def close(self):
        pass


class FakeClient:
    def __init__(self, made: FakeContainer | None = None, listed=(), output=frames((1, b"hi\n")),
                 broken_output=False):
        self.made, self.listed, self.created = made, list(listed), []
        self.output, self.broken_output = output, broken_output
        self.containers = self
        self.api = self

    # the engine's API, as ContainerRun._frames uses it
    def _url(self, path, *args):
        return path.format(*args)

    def _get(self, url, params=None, stream=False):
        return FakeAnswer(self.output, self.broken_output)

    def _raise_for_status(self, answer):
        pass

    def _get_raw_response_socket(self, answer):
        return None

    def _disable_socket_timeout(self, sock):
        pass

    def create(self, image, command, **kw):
        self.created.append(kw)
        return self.made

    def list(self, all=False, filters=None):
        return self.listed



def _start(client, tmp_path: Path) -> container.ContainerRun:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    run = container.ContainerRun(client, "img", container.runtime_of("python:3.11"), "s.py", [], tmp_path, {},
                                 sandbox.Limits(10, 11, 64, 16, 1), None, out_w, err_w,
                                 container.run_labels(tmp_path / "ex.w.lock"))
    run._test_reads = (out_r, err_r)
    return run


def _end(run):
    run.close()
    for fd in run._test_reads:
        os.close(fd)


def test_dev_shm_is_a_private_tiny_noexec_tmpfs_and_the_lock_a_label(tmp_path):
    client = FakeClient(FakeContainer())
    run = _start(client, tmp_path)
    run.wait(5)
    _end(run)
    kw = client.created[0]
    shm = kw["tmpfs"]["/dev/shm"].split(",")
    assert "noexec" in shm and "nosuid" in shm and f"size={container.SHM_MB}m" in shm
    assert kw["read_only"] and kw["network_mode"] == "none"
    assert kw["labels"] == {"org.rgrid.run": "1", "org.rgrid.lock": str(tmp_path / "ex.w.lock")}


def test_a_lost_engine_is_not_an_out_of_memory_kill(tmp_path):
    def broken(c):
        raise requests.ConnectionError("connection aborted")

    made = FakeContainer(wait=broken, state=None)
    run = _start(FakeClient(made), tmp_path)
    assert run.wait(5) != 137
    assert run.lost == "The worker lost its Docker engine while the script ran; run it again."
    assert not run.oom_killed
    _end(run)


def test_a_broken_wait_of_a_container_that_ended_keeps_its_exit_code(tmp_path):
    def broken(c):
        raise requests.ReadTimeout("read timed out")

    made = FakeContainer(wait=broken, state={"Running": False, "ExitCode": 3, "OOMKilled": False})
    run = _start(FakeClient(made), tmp_path)
    assert run.wait(5) == 3 and run.lost is None
    _end(run)


def test_a_refused_kill_is_tried_again_then_the_container_removed_by_force(tmp_path):
    def hang(c):
        c.ended.wait(10)
        return {"StatusCode": 137}

    def refuse(c):
        raise docker.errors.APIError("500 Server Error", explanation="cannot kill")

    made = FakeContainer(wait=hang, kill=refuse)
    run = _start(FakeClient(made), tmp_path)
    run.kill()
    assert made.killed == 2 and made.removed == 1
    assert run.wait(5) == 137
    _end(run)


def test_stdout_and_stderr_reach_the_log_pump_in_the_order_written(tmp_path):
    from rgrid_runner.logpump import LogPump

    written = [(1 + i % 2, f"line {i}\n".encode()) for i in range(200)]
    run = _start(FakeClient(FakeContainer(), output=frames(*written)), tmp_path)
    out_r, err_r = run._test_reads
    pump = LogPump(1 << 20)
    pump.start({"stdout": out_r, "stderr": err_r})
    pump.join(10)
    run.wait(5)
    run._test_reads = ()
    run.close()
    read = []
    while not pump.queue.empty():
        read.append(pump.queue.get())
    seen = [(stream, line + b"\n") for stream, data in read for line in data.splitlines()]
    assert seen == [("stdout" if s == 1 else "stderr", d) for s, d in written]
    assert run.output_note is None


def test_output_that_breaks_off_gets_a_note(tmp_path):
    run = _start(FakeClient(FakeContainer(), output=frames((1, b"partial\n")), broken_output=True), tmp_path)
    run.wait(5)
    for f in run._followers:
        f.join(5)
    assert "output could not be followed to its end" in run.output_note
    _end(run)


# Through the runner: what the run's finish says.

@pytest.fixture
def work_root():
    with tempfile.TemporaryDirectory(prefix="rgrid-container-test-", dir="/tmp") as d:
        yield Path(d)


def _run(server, work_root: Path, monkeypatch, made: FakeContainer, timeout: int = 30) -> tuple[str, dict]:
    server.objects["/blobs/script"] = SCRIPT
    import hashlib

    claim = dict(attempt=1, script="s.py", args=[], env={}, runtime="python:3.11", timeout_seconds=timeout,
                 inputs=[dict(name="s.py", sha256=hashlib.sha256(SCRIPT).hexdigest(), size=len(SCRIPT),
                              url=server.url + "/blobs/script")])
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, claim))
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (200, {"kept": True}))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    client = FakeClient(made)
    monkeypatch.setattr(runner, "_docker", lambda host: client)
    monkeypatch.setattr(runner, "_run_image", lambda *a: "img")
    settings = WorkerSettings(work_root=str(work_root), input_cache_mb=0, lease_check_interval_seconds=0.2,
                              docker_host="unix:///nonexistent.sock", worker_id="w-1")
    result = run_execution("ex1", WorkerClient(server.url, "rgw_t", outage_budget=3.0), settings)
    finishes = server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))
    assert client.created[0]["labels"]["org.rgrid.lock"] == str(work_root / "ex1.w-1.lock")
    return result, json.loads(finishes[-1]["body"]) if finishes else {}


def test_the_runner_reports_a_lost_engine_with_a_next_step(server, work_root, monkeypatch):
    def broken(c):
        raise requests.ConnectionError("connection aborted")

    result, body = _run(server, work_root, monkeypatch, FakeContainer(wait=broken, state=None))
    assert result == "failed"
    assert body["reason"] == container.ENGINE_LOST and body["exit_code"] is None


def test_a_container_the_engine_never_ends_does_not_hold_the_runner(server, work_root, monkeypatch):
    """The timeout kills it, the engine neither kills nor removes it nor reports its end: the
    runner's wait for it is bounded, and the run is lost, not timed out nor out of memory."""
    never = threading.Event()

    def hang(c):
        never.wait(60)
        raise requests.ConnectionError("gone")

    def refuse(c):
        raise requests.ConnectionError("engine not answering")

    made = FakeContainer(wait=hang, kill=refuse, state=None)
    made.remove = lambda force=False: (_ for _ in ()).throw(requests.ConnectionError("engine not answering"))
    monkeypatch.setattr(container, "STOP_WAIT", 0.5)
    try:
        result, body = _run(server, work_root, monkeypatch, made, timeout=1)
    finally:
        never.set()
    assert result == "failed"
    assert body["reason"] == container.ENGINE_LOST


def _pipes() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def test_no_pipe_leaks_when_handing_over_the_work_folder_fails(server, work_root, monkeypatch):
    def refuse(workdir, uid):
        raise PermissionError("chown refused")

    monkeypatch.setattr(sandbox, "hand_over", refuse)
    server.objects["/blobs/script"] = SCRIPT
    before = _pipes()
    for _ in range(3):
        _run_handover_failure(server, work_root, monkeypatch)
    assert _pipes() == before


def _run_handover_failure(server, work_root, monkeypatch):
    import hashlib

    claim = dict(attempt=1, script="s.py", args=[], env={}, runtime="python:3.11", timeout_seconds=30,
                 inputs=[dict(name="s.py", sha256=hashlib.sha256(SCRIPT).hexdigest(), size=len(SCRIPT),
                              url=server.url + "/blobs/script")])
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, claim))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    monkeypatch.setattr(runner, "_docker", lambda host: FakeClient(FakeContainer()))
    monkeypatch.setattr(runner, "_run_image", lambda *a: "img")
    settings = WorkerSettings(work_root=str(work_root), input_cache_mb=0, docker_host="unix:///nonexistent.sock")
    result = run_execution("ex1", WorkerClient(server.url, "rgw_t", outage_budget=3.0), settings)
    assert result == "runner-error"
    body = json.loads(server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))[-1]["body"])
    assert "chown refused" in body["reason"]


def test_only_containers_whose_run_lock_is_free_are_leftovers(tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    held, free, missing = root / "a.w.lock", root / "b.w.lock", root / "c.w.lock"
    free.touch()
    fd = os.open(held, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        found = {name: FakeContainer(name, labels=container.run_labels(lock))
                 for name, lock in (("held", held), ("free", free), ("missing", missing),
                                    ("other-root", tmp_path / "elsewhere" / "d.w.lock"))}
        found["unlabelled"] = FakeContainer("unlabelled", labels={"org.rgrid.run": "1"})
        removed = container.remove_leftovers(FakeClient(listed=found.values()), root)
        assert sorted(removed) == ["free", "missing"]
        assert {n for n, c in found.items() if c.removed} == {"free", "missing"}
        assert container.lock_is_held(held) and not container.lock_is_held(free)
        assert not missing.exists()  # probing never creates a lock file
    finally:
        os.close(fd)
    assert not container.lock_is_held(held)


def test_a_requirements_build_step_carries_its_build_lock(tmp_path, monkeypatch):
    """So the sweep also removes the build container of a runner that died mid-build."""
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_runner import layers

    monkeypatch.setattr(layers, "_wait", lambda *a, **kw: {"ExitCode": 0})
    client = FakeClient(FakeContainer())
    lock = tmp_path / "layers" / "req-python-3.11-abc.lock"
    layers._step(client, CATALOGUE["python:3.11"], "base", ["true"], None, None, "install", lock=lock)
    assert client.created[0]["labels"] == {"org.rgrid.build": "requirements", "org.rgrid.lock": str(lock)}
    assert container.remove_leftovers(FakeClient(listed=[FakeContainer("b", labels=client.created[0]["labels"])]),
                                      tmp_path) == ["b"]  # its builder holds the lock no more

"""rgrid_runner.sandbox: the bubblewrap command line, interpreters, and real sandboxed runs."""
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from rgrid_runner import sandbox
from rgrid_runner.sandbox import Limits, SandboxError, bwrap_command, preexec, resolve_interpreter

HAS_BWRAP = shutil.which("bwrap") is not None
IS_ROOT = os.geteuid() == 0
SANDBOX_UID = 200123


def need_bwrap():
    if HAS_BWRAP:
        return
    msg = "bubblewrap (bwrap) is not installed, so the real sandbox cannot be exercised; install the 'bubblewrap' package."
    if os.environ.get("RGRID_REQUIRE_ALL") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _triples(cmd: list[str], flag: str) -> list[tuple[str, str]]:
    return [(cmd[i + 1], cmd[i + 2]) for i, c in enumerate(cmd) if c == flag]


# ------------------------------------------------------------------ command line

def test_a_tool_found_is_remembered_and_a_missing_one_looked_for_again(tmp_path, monkeypatch):
    name = f"rgrid-test-tool-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sandbox.find_tool(name) is None
    tool = tmp_path / name
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert sandbox.find_tool(name) == str(tool)  # installed meanwhile: found now
    monkeypatch.setenv("PATH", "/nonexistent")
    assert sandbox.find_tool(name) == str(tool)  # remembered, not looked up on PATH again
    assert sandbox.find_tool(str(tmp_path / "absent")) is None
    assert sandbox.find_tool(str(tool)) == str(tool)


def test_bwrap_command_shape(tmp_path):
    need_bwrap()
    cmd = bwrap_command(tmp_path, "/usr/bin/python3.11", "process.py", ["/work/data.csv", "--n", "3"])
    assert cmd[0] == shutil.which("bwrap")
    for flag in ("--unshare-all", "--die-with-parent", "--new-session"):
        assert flag in cmd
    assert ("--bind", str(tmp_path), "/work") in zip(cmd, cmd[1:], cmd[2:])
    assert ("--chdir", "/work") in zip(cmd, cmd[1:])
    assert ("/usr", "/usr") in _triples(cmd, "--ro-bind")
    # The environment travels as bwrap's own environment: no values on the command line.
    assert "--setenv" not in cmd
    assert cmd[-6:] == ["--", "/usr/bin/python3.11", "process.py", "/work/data.csv", "--n", "3"]


def test_script_env_has_defaults_user_values_and_nothing_from_the_host():
    os.environ.setdefault("RGRID_TEST_LEAK", "x")
    env = sandbox.script_env({"API_TOKEN": "s3cr3t", "MSG": "hello world"})
    assert env["API_TOKEN"] == "s3cr3t" and env["MSG"] == "hello world"
    assert env["HOME"] == "/work" and env["RGRID"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in env and "RGRID_TEST_LEAK" not in env


def test_user_env_overrides_the_defaults():
    assert sandbox.script_env({"HOME": "/work/home"})["HOME"] == "/work/home"


def test_interpreter_outside_usr_gets_its_prefix_bound_read_only(tmp_path):
    need_bwrap()
    cmd = bwrap_command(tmp_path, "/opt/py311/bin/python3.11", "s.py", [])
    assert ("/opt/py311", "/opt/py311") in _triples(cmd, "--ro-bind")
    plain = bwrap_command(tmp_path, "/usr/bin/python3.11", "s.py", [])
    assert all(not src.startswith("/opt") for src, _ in _triples(plain, "--ro-bind"))


def test_bwrap_command_without_bwrap_is_a_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no bwrap on it
    monkeypatch.setattr(sandbox, "_found", {})  # a worker process that has not found it before
    with pytest.raises(SandboxError, match="install the 'bubblewrap' package"):
        bwrap_command(tmp_path, "/usr/bin/python3.11", "s.py", [])


def test_resolve_interpreter_finds_an_existing_python():
    path = resolve_interpreter("python:3.11")
    assert os.path.isabs(path) and os.path.exists(path) and os.access(path, os.X_OK)


@pytest.mark.parametrize("runtime", ["python:2.7", "node:20", "", "python"])
def test_unknown_runtime_lists_the_valid_ones(runtime):
    with pytest.raises(SandboxError) as info:
        resolve_interpreter(runtime)
    assert "python:3.11" in str(info.value)
    assert "Unknown runtime" in str(info.value)


def test_sandbox_uid_is_unprivileged_when_root():
    uid = sandbox.sandbox_uid()
    if IS_ROOT:
        assert uid is not None and uid >= sandbox.SANDBOX_UID_BASE
    else:
        assert uid is None


# ------------------------------------------------------------------ real sandbox runs

@pytest.fixture
def workdir():
    """A /work that an unprivileged uid could also reach (pytest's tmp root is private to us)."""
    base = tempfile.mkdtemp(prefix="rgrid-sbx-")
    os.chmod(base, 0o755)
    wd = Path(base) / "work"
    wd.mkdir()
    yield wd
    shutil.rmtree(base, ignore_errors=True)


def _run(workdir: Path, script_text: str, args=(), limits=None, uid=None, timeout=60, via="command"):
    """Start the sandbox the way rgrid_runner.runner does (via="command": prlimit + setpriv in
    front of bwrap, started with vfork), or with the same limits applied by preexec() and
    Popen's uid switch (via="preexec", as the throughput benchmark's floor does), and wait."""
    (workdir / "script.py").write_text(textwrap.dedent(script_text))
    sandbox.hand_over(workdir, uid)
    limits = limits or Limits(wall_seconds=60, cpu_seconds=60, memory_mb=1024, max_processes=64, max_file_mb=64)
    cmd = bwrap_command(workdir, resolve_interpreter("python:3.11"), "script.py", list(args))
    if via == "command":
        start = dict(args=sandbox.limited_command(cmd, limits, uid))
    else:
        start = dict(args=cmd, user=uid, group=uid, extra_groups=[] if uid is not None else None,
                     preexec_fn=preexec(limits))
    proc = subprocess.Popen(
        env=sandbox.script_env({"GREETING": "hi there"}), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, **start,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


CONFINEMENT_SCRIPT = """
    import os, socket, sys
    print("cwd", os.getcwd())
    print("env", os.environ.get("GREETING"), os.environ.get("HOME"))
    print("args", sys.argv[1:])
    port = int(sys.argv[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        print("net reached")
    except OSError as e:
        print("net blocked", type(e).__name__)
    try:
        with open("/usr/x", "w") as f:
            f.write("x")
        print("usr writable")
    except OSError as e:
        print("usr blocked", type(e).__name__)
    try:
        open("/etc/passwd").read()
        print("etc passwd visible")
    except OSError:
        print("etc passwd hidden")
    with open("/work/out.txt", "w") as f:
        f.write("made in the sandbox\\n")
    print("done")
"""


@pytest.mark.parametrize("as_sandbox_uid", [False, True], ids=["runner-uid", "unprivileged-uid"])
def test_real_sandbox_is_confined_to_work(workdir, as_sandbox_uid):
    need_bwrap()
    if as_sandbox_uid and not IS_ROOT:
        pytest.skip("switching to an unprivileged uid needs the tests to run as root")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code, out, err = _run(workdir, CONFINEMENT_SCRIPT, args=[str(port)],
                              uid=SANDBOX_UID if as_sandbox_uid else None)
        assert code == 0, err
        lines = out.splitlines()
        assert "cwd /work" in lines
        assert "env hi there /work" in lines
        assert f"args ['{port}']" in lines
        assert any(l.startswith("net blocked") for l in lines), out
        assert any(l.startswith("usr blocked") for l in lines), out
        assert "etc passwd hidden" in lines
        assert lines[-1] == "done"
        # nothing ever reached the host's listening socket
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert (workdir / "out.txt").read_text() == "made in the sandbox\n"
    assert not os.path.exists("/usr/x")


def test_real_sandbox_reports_the_script_exit_code(workdir):
    need_bwrap()
    code, out, err = _run(workdir, "import sys; print('bye'); sys.exit(7)")
    assert (code, out) == (7, "bye\n")


def test_real_sandbox_enforces_the_file_size_limit(workdir):
    need_bwrap()
    limits = Limits(wall_seconds=60, cpu_seconds=60, memory_mb=1024, max_processes=64, max_file_mb=1)
    code, out, err = _run(workdir, """
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            with open("big.bin", "wb") as f:
                f.write(b"x" * (3 * 1024 * 1024))
            print("wrote it all")
        except OSError as e:
            print("stopped", e.errno)
    """, limits=limits)
    assert code == 0, err
    assert out.startswith("stopped")
    assert (workdir / "big.bin").stat().st_size <= 1024 * 1024


FORK_SCRIPT = """
    import subprocess
    procs = []
    for i in range(100):
        try:
            procs.append(subprocess.Popen(["sleep", "30"]))
        except OSError as e:
            break
    print("started", len(procs))
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
"""


def test_process_limit_stops_a_fork_bomb(workdir):
    need_bwrap()
    if not IS_ROOT:
        pytest.skip("the process limit is enforced per uid; this test needs root to run the script as a uid of its own")
    limits = Limits(wall_seconds=60, cpu_seconds=60, memory_mb=1024, max_processes=20, max_file_mb=64)
    code, out, err = _run(workdir, FORK_SCRIPT, limits=limits, uid=SANDBOX_UID)
    assert code == 0, err
    started = int(out.split()[-1])
    assert out.startswith("started ")
    assert 0 < started < 100, out
    assert started < 20


LIMITS_SCRIPT = """
    import os, resource
    for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CORE"):
        print(name, *resource.getrlimit(getattr(resource, name)))
    print("uid", os.getuid(), os.getgid(), os.getgroups())
"""


@pytest.mark.parametrize("as_sandbox_uid", [False, True], ids=["runner-uid", "unprivileged-uid"])
def test_limits_and_uid_are_the_same_whichever_way_they_are_applied(workdir, as_sandbox_uid):
    """The runner's prlimit/setpriv command line gives the script exactly what preexec() and
    Popen's uid switch give it, and the outer sandbox process really runs as the run's uid."""
    need_bwrap()
    if as_sandbox_uid and not IS_ROOT:
        pytest.skip("switching to an unprivileged uid needs the tests to run as root")
    uid = SANDBOX_UID if as_sandbox_uid else None
    limits = Limits(wall_seconds=60, cpu_seconds=33, memory_mb=777, max_processes=44, max_file_mb=5)
    results = {}
    for via in ("command", "preexec"):
        code, out, err = _run(workdir, LIMITS_SCRIPT, limits=limits, uid=uid, via=via)
        assert code == 0, err
        results[via] = out
    assert results["command"] == results["preexec"]
    lines = results["command"].splitlines()
    assert "RLIMIT_CPU 33 38" in lines
    assert f"RLIMIT_AS {777 * 1024 * 1024} {777 * 1024 * 1024}" in lines
    assert "RLIMIT_NPROC 44 44" in lines and f"RLIMIT_FSIZE {5 * 1024 * 1024} {5 * 1024 * 1024}" in lines
    assert "RLIMIT_CORE 0 0" in lines
    # Outside the sandbox the process is the run's own uid with no supplementary groups.
    cmd = sandbox.limited_command(["/bin/sh", "-c", "id -u; id -G"], limits, uid)
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode().split()
    expected = str(uid if uid is not None else os.getuid())
    assert out[0] == expected and out[1] == str(uid if uid is not None else os.getgid())


def _niceness_of_child(before_spawn) -> int:
    """Niceness a child started from a fresh thread sees, after before_spawn() ran in that thread
    (which starts at niceness 15, as Ray's worker processes do)."""
    import threading

    seen = {}

    def body():
        os.setpriority(os.PRIO_PROCESS, 0, 15)
        before_spawn()
        out = subprocess.run(["/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat"], capture_output=True, check=True)
        seen["nice"] = int(out.stdout)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return seen["nice"]


def test_a_sandbox_started_from_a_niced_ray_worker_gets_the_configured_niceness():
    if not IS_ROOT:
        pytest.skip("lowering niceness needs root (CAP_SYS_NICE)")
    assert _niceness_of_child(lambda: None) == 15  # what Ray's niceness would give the script
    assert _niceness_of_child(lambda: sandbox.set_spawn_niceness(0)) == 0
    assert _niceness_of_child(lambda: sandbox.set_spawn_niceness(5)) == 5
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0  # only the spawning thread changed

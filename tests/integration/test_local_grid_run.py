"""`rgrid run` end to end on the real local grid, exactly as a user types it."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from rgrid.transfer import current_umask

pytestmark = pytest.mark.grid


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_wordcount_example_runs_and_outputs_come_back(grid, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    r = grid.rgrid("run", str(repo / "examples/wordcount.py"), str(repo / "examples/data/book.txt"),
                   "--top", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"12000 words" in r.stdout
    outputs = list((tmp_path / "rgrid-outputs").glob("ex-*/counts.csv"))
    assert len(outputs) == 1
    assert outputs[0].read_text().startswith("word,count\n")


def test_large_input_read_identically_to_local(grid, tmp_path):
    data = os.urandom(12 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    write(tmp_path / "digest.py", "import hashlib,sys\nprint(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())\n")
    r = grid.rgrid("run", "digest.py", "big.bin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def test_three_inputs_duplicate_names_and_argument_rewriting(grid, tmp_path):
    write(tmp_path / "a/data.csv", "from a\n")
    write(tmp_path / "b/data.csv", "from b\n")
    write(tmp_path / "notes.txt", "notes\n")
    write(tmp_path / "show.py", "import sys, json\nprint(json.dumps([sys.argv[1:], [open(a).read() if a.startswith('/work/') else None for a in sys.argv[1:]]]))\n")
    r = grid.rgrid("run", "show.py", "a/data.csv", "b/data.csv", "notes.txt", "--flag", "two words", "missing.txt",
                   "", "it's \"quoted\"", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    args, contents = json.loads(r.stdout)
    assert args == ["/work/data.csv", "/work/data-2.csv", "/work/notes.txt", "--flag", "two words",
                    "missing.txt", "", "it's \"quoted\""]
    assert contents[:3] == ["from a\n", "from b\n", "notes\n"]


def test_directory_input_and_outputs_in_subfolders(grid, tmp_path):
    write(tmp_path / "photos/one.txt", "1")
    write(tmp_path / "photos/nested/two.txt", "22")
    write(tmp_path / "tree.py", """
import os, sys
src = sys.argv[1]
print(src, sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs))
os.makedirs("results/deep", exist_ok=True)
open("results/deep/summary.txt", "w").write("ok")
open("top.txt", "w").write("top")
""")
    out = tmp_path / "out"
    r = grid.rgrid("run", "--output-dir", str(out), "tree.py", "photos", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert "/work/photos ['nested/two.txt', 'one.txt']" in r.stdout.decode()
    assert (out / "results/deep/summary.txt").read_text() == "ok"
    assert (out / "top.txt").read_text() == "top"
    # Inputs that the script did not change are not outputs.
    assert not (out / "tree.py").exists() and not (out / "photos").exists()


def test_exit_code_and_stderr_propagate(grid, tmp_path):
    write(tmp_path / "fail.py", "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(7)\n")
    r = grid.rgrid("run", "--no-download", "fail.py", cwd=tmp_path)
    assert r.returncode == 7
    assert b"to stdout" in r.stdout
    assert b"to stderr" in r.stderr
    assert b"exited with code 7" in r.stderr


def test_timeout_exits_non_zero_with_reason(grid, tmp_path):
    write(tmp_path / "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    r = grid.rgrid("run", "--timeout", "2", "slow.py", cwd=tmp_path)
    assert r.returncode == 124
    assert b"Timed out after 2 s" in r.stderr


def test_scripts_run_at_the_niceness_of_rays_workers_by_default(grid, tmp_path):
    """Ray starts its worker processes at niceness 15 and, with RGRID_SANDBOX_NICENESS unset, the
    sandbox keeps it: the control plane and Ray come first on a busy machine (documented in the
    README; setting the knob is tested in tests/unit/test_sandbox.py)."""
    write(tmp_path / "nice.py", "import os\nprint('niceness', os.nice(0))\n")
    r = grid.rgrid("run", "nice.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["niceness", "15"]


def test_memory_limit_gives_one_line_reason(grid, tmp_path):
    write(tmp_path / "hog.py", "x = bytearray(2 * 1024 ** 3)\n")
    r = grid.rgrid("run", "hog.py", cwd=tmp_path)
    assert r.returncode != 0
    assert b"Out of memory" in r.stderr


def test_sandbox_has_no_network_and_read_only_system(grid, tmp_path):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    write(tmp_path / "probe.py", f"""
import os, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2); print("NET OPEN")
except OSError:
    print("net closed")
try:
    open("/usr/evil", "w"); print("USR WRITABLE")
except OSError:
    print("usr read-only")
print("cwd", os.getcwd(), "home", os.environ.get("HOME"))
print("secret visible" if os.path.exists(os.path.expanduser("~/.rgrid")) else "no host home")
""")
    r = grid.rgrid("run", "probe.py", cwd=tmp_path)
    listener.close()
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "net closed" in out and "usr read-only" in out
    assert "cwd /work home /work" in out


def command_lines() -> list[bytes]:
    lines = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                lines.append(Path(f"/proc/{p}/cmdline").read_bytes())
            except OSError:
                pass
    return lines


def test_env_values_reach_the_script_but_never_listings(grid, tmp_path):
    write(tmp_path / "env.py", "import os, time\nprint(len(os.environ['API_TOKEN']), flush=True)\ntime.sleep(2)\n")
    r = grid.rgrid("run", "--detach", "--env", "API_TOKEN=s3cr3t-value", "env.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    ex_id = r.stdout.decode().strip()
    assert ex_id.startswith("ex-")
    with grid.api() as api:
        while api.get(f"/v1/executions/{ex_id}/logs").json()["chunks"] == []:
            time.sleep(0.1)
    # While the script runs, no process on the machine shows the value on its command line.
    assert not any(b"s3cr3t-value" in line for line in command_lines())
    wait_terminal(grid, ex_id)
    logs = grid.rgrid("logs", ex_id)
    assert logs.stdout.decode().strip() == str(len("s3cr3t-value"))
    for cmd in (("status", ex_id), ("status", "--json", ex_id), ("list", "--json")):
        shown = grid.rgrid(*cmd)
        assert b"s3cr3t-value" not in shown.stdout + shown.stderr
    assert "API_TOKEN" in json.loads(grid.rgrid("status", "--json", ex_id).stdout)["env_keys"]


def wait_terminal(grid, ex_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    with grid.api() as api:
        while time.monotonic() < deadline:
            ex = api.get(f"/v1/executions/{ex_id}").json()
            if ex["status"] in ("succeeded", "failed", "timed_out", "canceled", "lost"):
                return ex
            time.sleep(0.2)
    raise AssertionError(f"{ex_id} did not finish in {timeout} s")


def test_detach_status_list_logs_download(grid, tmp_path):
    write(tmp_path / "hello.py", "print('hello from the grid')\nopen('greeting.txt','w').write('hi')\n")
    r = grid.rgrid("run", "--detach", "hello.py", cwd=tmp_path)
    ex_id = r.stdout.decode().strip()
    ex = wait_terminal(grid, ex_id)
    assert ex["status"] == "succeeded" and ex["exit_code"] == 0
    status = json.loads(grid.rgrid("status", "--json", ex_id).stdout)
    assert status["worker_id"] in ("w-1", "w-2", "w-3")
    assert status["attempt"] == 1 and status["attempts"][0]["outcome"] == "succeeded"
    assert status["started_at"] and status["finished_at"] and status["queued_at"]
    listed = json.loads(grid.rgrid("list", "--json", "--limit", "200").stdout)
    assert ex_id in [e["id"] for e in listed]
    assert grid.rgrid("logs", ex_id).stdout == b"hello from the grid\n"
    assert grid.rgrid("logs", "--follow", ex_id).stdout == b"hello from the grid\n"
    d = grid.rgrid("download", ex_id, "--output-dir", str(tmp_path / "dl"))
    assert d.returncode == 0, d.stderr.decode()
    assert (tmp_path / "dl/greeting.txt").read_text() == "hi"


def test_download_while_running_says_so_and_logs_follow_exits_like_run(grid, tmp_path):
    write(tmp_path / "slow.py", "import sys, time\nprint('working', flush=True)\nopen('part.txt', 'w').write('x')\n"
                                "time.sleep(4)\nsys.exit(7)\n")
    ex_id = grid.rgrid("run", "--detach", "slow.py", cwd=tmp_path).stdout.decode().strip()
    d = grid.rgrid("download", ex_id, "--output-dir", str(tmp_path / "dl"))
    said = " ".join(d.stderr.decode().split())
    assert d.returncode == 1, said
    assert (f"{ex_id} is still queued" in said or f"{ex_id} is still running" in said) and f"rgrid logs -f {ex_id}" in said
    assert "no output files" not in said and not (tmp_path / "dl").exists()
    f = grid.rgrid("logs", "-f", ex_id)  # follows it to its end: exits with the script's code
    assert f.returncode == 7, f.stderr.decode()
    assert f.stdout == b"working\n" and b"exited with code 7" in f.stderr
    d = grid.rgrid("download", ex_id, "--output-dir", str(tmp_path / "dl"))
    assert d.returncode == 0 and (tmp_path / "dl" / "part.txt").read_text() == "x"
    assert (tmp_path / "dl" / "part.txt").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_cancel_running_execution(grid, tmp_path):
    # A name no other run has (the machine may hold other tests' and other grids' scripts).
    script = f"long_{os.urandom(4).hex()}.py"
    write(tmp_path / script, "import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    ex_id = grid.rgrid("run", "--detach", script, cwd=tmp_path).stdout.decode().strip()
    try:
        deadline = time.monotonic() + 60
        with grid.api() as api:
            while api.get(f"/v1/executions/{ex_id}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        r = grid.rgrid("cancel", ex_id)
        assert r.returncode == 0 and b"canceled" in r.stdout
        ex = wait_terminal(grid, ex_id)
        assert ex["status"] == "canceled"
        # The sandbox was killed: this script sleeps nowhere on the machine any more.
        time.sleep(1.5)
        left = [c for c in command_lines() if script.encode() in c and b"bwrap" not in c and b"rgrid" not in c]
        assert not left, left
    finally:
        grid.cancel(ex_id)


def test_non_utf8_output_and_huge_output_are_kept_bounded(grid, tmp_path):
    write(tmp_path / "noisy.py", """
import sys
sys.stdout.buffer.write(b"\\xff\\xfe binary \\x00 start\\n")
sys.stdout.flush()
line = b"x" * 1023 + b"\\n"
for _ in range(3 * 1024):   # 3 MiB, three times the test grid's 1 MiB log limit
    sys.stdout.buffer.write(line)
""")
    r = grid.rgrid("run", "noisy.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.startswith(b"\xff\xfe binary \x00 start\n")
    assert len(r.stdout) == 1024 * 1024
    assert b"output truncated" in r.stderr
    ex_id = json.loads(grid.rgrid("list", "--json", "--limit", "1").stdout)[0]["id"]
    assert json.loads(grid.rgrid("status", "--json", ex_id).stdout)["log_truncated"] is True
    again = grid.rgrid("logs", ex_id)
    assert again.stdout == r.stdout


def test_clear_errors_before_anything_is_queued(grid, tmp_path):
    before = len(json.loads(grid.rgrid("list", "--json", "--limit", "1000").stdout))
    r = grid.rgrid("run", "nope.py", cwd=tmp_path)
    assert r.returncode != 0 and b"not found" in r.stderr
    write(tmp_path / "ok.py", "print(1)\n")
    r = grid.rgrid("run", "--runtime", "python:2.7", "ok.py", cwd=tmp_path)
    assert r.returncode != 0 and b"python:3.11" in r.stderr
    secret = write(tmp_path / "secret.txt", "x")
    secret.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        r = grid.rgrid("run", "ok.py", "secret.txt", cwd=tmp_path)
        assert r.returncode != 0 and b"not readable" in r.stderr
    after = len(json.loads(grid.rgrid("list", "--json", "--limit", "1000").stdout))
    assert after == before


def test_api_rejects_missing_and_invalid_keys(grid):
    with grid.api(key=None) as anon:
        assert anon.get("/v1/health").status_code == 200
        r = anon.get("/v1/executions")
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    with grid.api(key="rg_not-a-real-key") as bad:
        r = bad.get("/v1/executions")
        assert r.status_code == 401 and "not valid" in r.json()["detail"]


def test_other_tenant_sees_nothing(grid, tmp_path):
    from rgrid_service.auth import create_key
    from rgrid_service.db.session import engine_for

    other_key = create_key(engine_for(grid.state.database_url), "someone-else")
    write(tmp_path / "mine.py", "print('mine')\n")
    ex_id = grid.rgrid("run", "--detach", "mine.py", cwd=tmp_path).stdout.decode().strip()
    wait_terminal(grid, ex_id)
    with grid.api(key=other_key) as other:
        for path in (f"/v1/executions/{ex_id}", f"/v1/executions/{ex_id}/logs", f"/v1/executions/{ex_id}/outputs"):
            assert other.get(path).status_code == 404
        assert other.post(f"/v1/executions/{ex_id}/cancel").status_code == 404
        assert other.get("/v1/executions").json() == []
    r = grid.rgrid("status", ex_id, env={"RGRID_API_URL": grid.state.api_url, "RGRID_API_KEY": other_key})
    assert r.returncode == 1 and b"No execution" in r.stderr


def test_malicious_input_names_straight_to_the_api(grid):
    spec = {"kind": "file", "size": 1, "sha256": "0" * 64, "md5": "0" * 32}
    with grid.api() as api:
        for name in ["../escape.py", "a/b.py", "/etc/passwd", "x\x00.py", "..", ".", "a\\b.py", "n" * 300]:
            r = api.post("/v1/executions", json={"script": name, "inputs": [{**spec, "name": name}]})
            assert r.status_code in (400, 422), (name, r.status_code)
            assert isinstance(r.json()["detail"], (str, list))


def test_presigned_urls_are_really_checked(grid, tmp_path):
    import httpx

    spec = {"name": "s.py", "kind": "file", "size": 5, "sha256": hashlib.sha256(b"print").hexdigest(),
            "md5": hashlib.md5(b"print").hexdigest()}
    with grid.api() as api:
        created = api.post("/v1/executions", json={"script": "s.py", "inputs": [spec]}).json()
        url = created["uploads"][0]["url"]
        tampered = url.replace(created["id"], "ex-000000000000")  # another object than the one signed for
        assert httpx.put(tampered, content=b"print").status_code == 403
        # Submitting before the upload is refused with a sentence and nothing is queued.
        r = api.post(f"/v1/executions/{created['id']}/submit")
        assert r.status_code == 409 and "was not uploaded" in r.json()["detail"]
        # Uploading different bytes of the same size is caught by the checksum.
        assert httpx.put(url, content=b"PRINT").status_code == 200
        r = api.post(f"/v1/executions/{created['id']}/submit")
        assert r.status_code == 409 and "checksum" in r.json()["detail"]
        assert httpx.put(url, content=b"print").status_code == 200
        r = api.post(f"/v1/executions/{created['id']}/submit")
        assert r.status_code == 200 and r.json()["status"] == "queued"


def test_ctrl_c_in_a_non_interactive_terminal_cancels(grid, tmp_path):
    import subprocess

    from tests.conftest import FAULTHANDLER, RGRID, ctrl_c_default, interrupt

    script = f"long_{os.urandom(4).hex()}.py"
    write(tmp_path / script, "import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([RGRID, "run", script], cwd=tmp_path, env={**grid.env, **FAULTHANDLER},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_default)
    try:
        assert proc.stdout.readline() == b"working\n"
        _, err = interrupt(proc, grid)
        assert proc.returncode == 130, err.decode()
        assert b"Canceled ex-" in err
        ex_id = err.decode().split("Canceled ")[1].split(".")[0]
        assert wait_terminal(grid, ex_id)["status"] == "canceled"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        grid.cancel(*grid.unfinished(script))  # its two-minute run must not outlive a failure here


def test_download_refuses_output_names_that_escape(grid, tmp_path):
    from sqlalchemy import insert

    from rgrid_service.db.models import ExecutionOutput

    write(tmp_path / "out.py", "open('fine.txt', 'w').write('fine')\n")
    ex_id = grid.rgrid("run", "--detach", "out.py", cwd=tmp_path).stdout.decode().strip()
    ex = wait_terminal(grid, ex_id)
    # A record no runner would write (runners skip such names), as if the database were tampered with.
    with grid.engine().begin() as conn:
        for i, evil in enumerate(["../evil.txt", "/tmp/evil-abs.txt", "a/../../evil2.txt"]):
            conn.execute(insert(ExecutionOutput).values(
                execution_id=ex_id, attempt=ex["attempt"], path=evil, size=4, sha256="0" * 64,
                object_key=f"executions/{ex_id}/outputs/a1/fine.txt"))
    target = tmp_path / "dl" / "inner"
    r = grid.rgrid("download", ex_id, "--output-dir", str(target))
    assert (target / "fine.txt").read_text() == "fine"
    assert r.stderr.count(b"Refusing output name") == 3
    assert r.returncode == 1 and b"3 of 4 output file(s) could not be downloaded" in r.stderr
    assert not (tmp_path / "dl" / "evil.txt").exists() and not Path("/tmp/evil-abs.txt").exists()
    assert not (tmp_path / "evil2.txt").exists()


def test_openapi_docs_are_served(grid):
    with grid.api(key=None) as anon:
        assert anon.get("/docs").status_code == 200
        paths = anon.get("/openapi.json").json()["paths"]
    assert "/v1/executions" in paths and "/v1/executions/{execution_id}/logs" in paths


def test_ctrl_c_on_a_terminal_offers_detach(grid, tmp_path):
    """On a real terminal (a pty), Ctrl-C asks; answering 'd' detaches and the run goes on."""
    import fcntl
    import pty
    import select
    import subprocess
    import termios

    from tests.conftest import RGRID, ctrl_c_default

    write(tmp_path / "long.py", "import time\nprint('working', flush=True)\ntime.sleep(4)\nprint('finished')\n")
    master, slave = pty.openpty()

    def take_terminal():
        ctrl_c_default()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([RGRID, "run", "long.py"], cwd=tmp_path, env={**grid.env, "COLUMNS": "200"},
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=take_terminal)
    os.close(slave)
    seen = b""

    def read_until(needle: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    read_until(b"working")
    os.write(master, b"\x03")  # Ctrl-C through the terminal: SIGINT to its foreground group
    read_until(b"detach")
    os.write(master, b"d\n")
    read_until(b"Detached")
    assert proc.wait(timeout=30) == 0
    os.close(master)
    ex_id = seen.split(b"Execution ")[1].split(b" ")[0].decode()
    ex = wait_terminal(grid, ex_id)
    assert ex["status"] == "succeeded"
    assert grid.rgrid("logs", ex_id).stdout == b"working\nfinished\n"


def test_status_after_a_run_shows_every_stage_in_order(grid, tmp_path):
    write(tmp_path / "staged.py", "import time\nprint('started', flush=True)\ntime.sleep(1.5)\n"
                                  "open('result.txt', 'w').write('done')\n")
    r = grid.rgrid("run", "staged.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    ex_id = next(iter((tmp_path / "rgrid-outputs").iterdir())).name
    shown = json.loads(grid.rgrid("status", "--json", ex_id).stdout)
    stages = [s["stage"] for s in shown["timeline"]]
    # No worker had to be provisioned on this grid: every other stage, in order, at rising times.
    assert stages == ["queued", "dispatched", "staging", "running", "uploading", "finished"], shown["timeline"]
    times = [s["at"] for s in shown["timeline"]]
    assert times == sorted(times) and shown["stage"] == "finished" and shown["waiting"] is None
    # The script slept 1.5 s between its start and its outputs going up.
    from datetime import datetime

    at = {s["stage"]: datetime.fromisoformat(s["at"].replace("Z", "+00:00")) for s in shown["timeline"]}
    assert (at["uploading"] - at["running"]).total_seconds() >= 1.4, shown["timeline"]
    human = grid.rgrid("status", ex_id).stdout.decode()
    rows = [line.split()[0] for line in human.split("stages", 1)[1].splitlines() if line.strip()]
    assert rows[1:8] == [*stages, "total"], human

"""`rgrid run --batch GLOB [--parallel N]` end to end on the real local grid, as a user types it."""
from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

TERMINAL = ("succeeded", "failed", "timed_out", "canceled", "lost")

SUM = """
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
try:
    total = sum(float(r["value"]) for r in rows)
except ValueError as e:
    print(f"cannot sum {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(3)
print(total)
open("result.txt", "w").write(f"{total:g}\\n")
"""

SHOW = """
import json, sys
print(json.dumps(sys.argv[1:]))
open("args.json", "w").write(json.dumps(sys.argv[1:]))
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def text(raw: bytes) -> str:
    """stderr with rich's line wrapping undone, so sentences can be searched for."""
    return " ".join(raw.decode().split())


def batch_id_of(r: subprocess.CompletedProcess) -> str:
    m = re.search(r"Batch (b-[0-9a-f]{10}): \d+ executions? queued", text(r.stderr))
    assert m, r.stderr.decode()
    return m.group(1)


def listed(grid, *args: str) -> list[dict]:
    r = grid.rgrid("list", "--json", *args)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------- on the grid


@pytest.mark.grid
def test_batch_with_one_failure(grid, tmp_path):
    write(tmp_path / "sum.py", SUM)
    values = {"a": [1, 2, 3], "b": [10, 20], "c": [0.5, 0.25], "d": [7]}
    for stem, nums in values.items():
        write(tmp_path / f"data/{stem}.csv", "name,value\n" + "".join(f"r{i},{n}\n" for i, n in enumerate(nums)))
    write(tmp_path / "data/bad.csv", "name,value\nr0,1\nr1,oops\n")
    write(tmp_path / "data/notes.txt", "not part of the batch\n")

    r = grid.rgrid("run", "--batch", "data/*.csv", "sum.py", cwd=tmp_path)
    err = text(r.stderr)
    assert r.returncode == 1, err
    batch = batch_id_of(r)
    assert "5 executions queued" in err
    assert "1 of 5 executions of batch" in err and "did not succeed" in err
    failed_line = re.search(r"data/bad\.csv +(ex-[0-9a-f]{12}) +failed +([^\n]*)", r.stderr.decode())
    assert failed_line, r.stderr.decode()
    assert "3" in failed_line.group(2)  # the reason names the exit code
    assert b"cannot sum" not in r.stdout + r.stderr  # scripts' output is not streamed in batch mode
    root = tmp_path / "rgrid-outputs" / batch
    for stem, nums in values.items():
        assert (root / stem / "result.txt").read_text() == f"{sum(nums):g}\n"
    assert not (root / "bad" / "result.txt").exists()
    assert {p.name for p in root.iterdir()} <= {"a", "b", "bad", "c", "d"}

    s = grid.rgrid("status", "--batch", batch, "--json")
    assert s.returncode == 0, s.stderr.decode()
    status = json.loads(s.stdout)
    assert status["batch"] == batch
    assert status["counts"] == {"succeeded": 4, "failed": 1}
    assert sorted(e["input"] for e in status["executions"]) == ["a.csv", "b.csv", "bad.csv", "c.csv", "d.csv"]
    bad = next(e for e in status["executions"] if e["input"] == "bad.csv")
    assert bad["id"] == failed_line.group(1) and bad["exit_code"] == 3 and bad["status"] == "failed"
    logs = grid.rgrid("logs", bad["id"])
    assert b"cannot sum /work/bad.csv" in logs.stderr

    human = grid.rgrid("status", "--batch", batch)
    assert human.returncode == 0 and "4 succeeded, 1 failed" in text(human.stdout)
    assert bad["id"] in human.stdout.decode()

    rows = listed(grid, "--batch", batch)
    assert len(rows) == 5 and {e["batch_id"] for e in rows} == {batch}


@pytest.mark.grid
def test_parallel_one_never_overlaps(grid, tmp_path):
    write(tmp_path / "clock.py", """
import json, sys, time
start = time.time()
time.sleep(1.5)
open("times.json", "w").write(json.dumps({"input": sys.argv[1], "start": start, "end": time.time()}))
""")
    for name in ("x", "y", "z"):
        write(tmp_path / f"in/{name}.txt", name)
    r = grid.rgrid("run", "--batch", "in/*.txt", "--parallel", "1", "clock.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    batch = batch_id_of(r)
    assert "at most 1 at a time" in text(r.stderr)

    # What the scripts saw.
    spans = sorted((json.loads((tmp_path / "rgrid-outputs" / batch / n / "times.json").read_text())
                    for n in ("x", "y", "z")), key=lambda s: s["start"])
    assert [s["input"] for s in spans] == ["/work/x.txt", "/work/y.txt", "/work/z.txt"]  # queue order
    for earlier, later in zip(spans, spans[1:]):
        assert earlier["end"] <= later["start"], spans

    # What the database recorded.
    with grid.api() as api:
        rows = api.get("/v1/executions", params={"batch": batch, "limit": 10}).json()
    assert len(rows) == 3 and all(e["status"] == "succeeded" for e in rows)
    runs = sorted((ts(e["started_at"]), ts(e["finished_at"])) for e in rows)
    for (_, finished), (started, _) in zip(runs, runs[1:]):
        assert finished <= started, runs


@pytest.mark.grid
def test_glob_matching_nothing_queues_nothing(grid, tmp_path):
    write(tmp_path / "sum.py", SUM)
    write(tmp_path / "data/a.txt", "x")
    before = len(listed(grid, "--limit", "1000"))
    for args in (("run", "--batch", "data/*.csv", "sum.py"), ("run", "--batch", "nowhere/**/*.csv", "sum.py")):
        r = grid.rgrid(*args, cwd=tmp_path)
        assert r.returncode != 0
        err = text(r.stderr)
        assert "No file matches --batch" in err and "nothing was queued" in err, err
        assert "Traceback" not in err
    assert len(listed(grid, "--limit", "1000")) == before


@pytest.mark.grid
def test_rgrid_options_before_the_script_and_the_double_dash(grid, tmp_path):
    write(tmp_path / "show.py", SHOW)
    write(tmp_path / "in/one.txt", "1")
    write(tmp_path / "in/two.txt", "2")
    before = len(listed(grid, "--limit", "1000"))

    # rgrid's options before the script; everything after it is the script's.
    leading = grid.rgrid("run", "--batch", "in/*.txt", "--parallel", "2", "--output-dir", "lead", "show.py",
                         "--top", "5", cwd=tmp_path)
    assert leading.returncode == 0, leading.stderr.decode()
    for name in ("one", "two"):
        assert json.loads((tmp_path / "lead" / name / "args.json").read_text()) == [f"/work/{name}.txt", "--top", "5"]
    assert leading.stdout == b""  # no streamed script output in batch mode

    # A --batch after the script is refused, and so is a pattern the shell expanded: nothing queued.
    trailing = grid.rgrid("run", "show.py", "--batch", "in/*.txt", "--parallel", "2", "--top", "5", cwd=tmp_path)
    assert trailing.returncode == 1 and "`--batch` after the script would go to the script" in text(trailing.stderr)
    unquoted = grid.rgrid("run", "--batch", "in/one.txt", "in/two.txt", "show.py", cwd=tmp_path)
    assert unquoted.returncode == 1, unquoted.stderr.decode()
    assert "your shell expanded the pattern" in text(unquoted.stderr) and "--batch 'in/*.txt'" in text(unquoted.stderr)
    assert len(listed(grid, "--limit", "1000")) == before + 2  # the two of the leading batch only

    # `--` hands a literal --batch to the script: one ordinary run, output streamed.
    single = grid.rgrid("run", "--no-download", "show.py", "--", "--batch", "in/*.txt", cwd=tmp_path)
    assert single.returncode == 0, single.stderr.decode()
    assert json.loads(single.stdout) == ["--batch", "in/*.txt"]
    assert "Batch b-" not in text(single.stderr) and "rgrid:" not in text(single.stderr)
    # ...and inside a batch, everything after `--` is the script's.
    both = grid.rgrid("run", "--batch", "in/o*.txt", "show.py", "--", "--batch", "--parallel", cwd=tmp_path)
    assert both.returncode == 0, both.stderr.decode()
    got = json.loads((tmp_path / "rgrid-outputs" / batch_id_of(both) / "one" / "args.json").read_text())
    assert got == ["/work/one.txt", "--batch", "--parallel"]

    # Any other rgrid option after the script is the script's, with a hint.
    plain = grid.rgrid("run", "--no-download", "show.py", "--parallel", "3", cwd=tmp_path)
    assert plain.returncode == 0 and json.loads(plain.stdout) == ["--parallel", "3"]
    assert "`--parallel` after the script goes to the script" in text(plain.stderr)


@pytest.mark.grid
def test_detach_then_status_and_status_argument_rules(grid, tmp_path):
    write(tmp_path / "show.py", SHOW)
    write(tmp_path / "in/one.txt", "1")
    write(tmp_path / "in/two.txt", "2")
    r = grid.rgrid("run", "--detach", "--batch", "in/*.txt", "show.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    batch = r.stdout.decode().strip()
    assert re.fullmatch(r"b-[0-9a-f]{10}", batch) and batch == batch_id_of(r)
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(grid.rgrid("status", "--batch", batch, "--json").stdout)
        if sum(status["counts"].values()) == 2 and set(status["counts"]) <= set(TERMINAL):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["counts"] == {"succeeded": 2}
    assert not (tmp_path / "rgrid-outputs").exists()  # detached: nothing downloaded

    for args in (("status",), ("status", "ex-000000000000", "--batch", batch)):
        s = grid.rgrid(*args)
        assert s.returncode != 0 and "exactly one" in text(s.stderr), s.stderr.decode()
    s = grid.rgrid("status", "--batch", "b-0000000000")
    assert s.returncode != 0 and "No executions in batch" in text(s.stderr)


@pytest.mark.grid
def test_ctrl_c_in_a_non_interactive_terminal_cancels_the_batch(grid, tmp_path):
    from tests.conftest import FAULTHANDLER, RGRID, ctrl_c_default, interrupt

    write(tmp_path / "long.py", "import time\ntime.sleep(120)\n")
    for n in range(3):
        write(tmp_path / f"in/{n}.txt", str(n))
    proc = subprocess.Popen([RGRID, "run", "--batch", "in/*.txt", "--parallel", "2", "long.py"], cwd=tmp_path,
                            env={**grid.env, **FAULTHANDLER}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=ctrl_c_default)
    batch = None
    try:
        seen = b""
        while b"queued" not in seen:  # every execution is queued: now it follows the batch
            line = proc.stderr.readline()
            assert line, seen.decode()
            seen += line
        batch = re.search(r"Batch (b-[0-9a-f]{10})", seen.decode()).group(1)
        deadline = time.monotonic() + 60
        with grid.api() as api:
            while True:
                rows = api.get("/v1/executions", params={"batch": batch, "limit": 10}).json()
                if sum(e["status"] == "running" for e in rows) == 2:
                    break
                assert time.monotonic() < deadline, rows
                time.sleep(0.2)
        # --parallel 2 holds the third back while two run.
        assert len(rows) == 3 and sorted(e["status"] for e in rows) == ["queued", "running", "running"]
        _, err = interrupt(proc, grid)
        assert proc.returncode == 130, err.decode()
        assert f"Canceled 3 unfinished execution(s) of batch {batch}" in text(err)
        deadline = time.monotonic() + 30
        with grid.api() as api:
            while True:
                rows = api.get("/v1/executions", params={"batch": batch, "limit": 10}).json()
                if all(e["status"] in TERMINAL for e in rows):
                    break
                assert time.monotonic() < deadline, rows
                time.sleep(0.2)
        assert len(rows) == 3 and {e["status"] for e in rows} == {"canceled"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if batch is not None:
            grid.cancel(batch)  # its two-minute runs must not outlive a failure here


@pytest.mark.grid
def test_cancel_a_batch_in_one_request(grid, tmp_path):
    write(tmp_path / "long.py", "import time\ntime.sleep(120)\n")
    for n in range(3):
        write(tmp_path / f"in/{n}.txt", str(n))
    r = grid.rgrid("run", "--detach", "--batch", "in/*.txt", "--parallel", "1", "long.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    batch = r.stdout.decode().strip()
    try:
        deadline = time.monotonic() + 60
        with grid.api() as api:
            while not any(e["status"] == "running" for e in api.get("/v1/executions", params={"batch": batch}).json()):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        c = grid.rgrid("cancel", batch)
        assert c.returncode == 0, c.stderr.decode()
        assert f"{batch}: canceled 3 unfinished execution(s)" in text(c.stdout)
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(grid.rgrid("status", "--batch", batch, "--json").stdout)
            if status["counts"] == {"canceled": 3}:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        again = grid.rgrid("cancel", batch)  # nothing left to cancel
        assert again.returncode == 0 and f"{batch}: canceled 0 unfinished execution(s)" in text(again.stdout)
        unknown = grid.rgrid("cancel", "b-0000000000")
        assert unknown.returncode == 1 and "b-0000000000" in text(unknown.stderr)
        assert "Traceback" not in text(unknown.stderr)
    finally:
        grid.cancel(batch)  # its two-minute runs must not outlive a failure here

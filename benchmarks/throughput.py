"""Throughput: N no-op executions through RGrid vs the floor, the same sandbox run directly.

    .venv/bin/python benchmarks/throughput.py [--n 300] [--submitters 4] [--fast]
                                              [--dispatch-interval S] [--set RGRID_X=V ...] [--skip-floor]
                                              [--rounds 3] [--unique-scripts] [--prints]

- Rounds (--rounds, default 3): floor, RGrid, floor, RGrid, …, floor. Each RGrid run is compared
  with the mean of the floor runs just before and just after it, so that the machine's speed
  drifting (it does, by a factor of up to 2 here) weighs on both; the ratio reported is the median
  over the rounds, with the lowest and highest.
- Floor: the exact command line the runner builds (sandbox.limited_command around
  sandbox.bwrap_command: prlimit sets the limits, setpriv the per-run uid, then bwrap; script_env;
  the chown of the workdir; started with vfork as the runner does), each run in a fresh workdir
  with noop.py staged, removed afterwards, N times, 2 at a time (one worker's 2 slots) on this
  machine. No orchestration can beat it.
- RGrid: a throwaway 1-worker grid (2 slots). After 2 unmeasured warm-up executions, N no-op
  executions are submitted all at once through the API as one batch, the way `rgrid run --batch`
  submits (rgrid/cli.py submit_batch): bulk creates of up to 500 asking to queue at once; the
  script, held by content since the warm-up, is not uploaded again. The batch's per-status counts
  are polled twice a second (as `rgrid run --batch` follows a batch), and the clock runs from the
  first create call to the last `finished_at`.
  --unique-scripts gives every execution its own script, so each one is uploaded (presigned PUT
  and submit, from --submitters threads) and fetched from the object store by the runner.

Prints jobs/minute for both, the ratio RGrid / floor and whether the goal (>= 0.6, issue #11; #3 asked 0.5) is met, plus
where RGrid's time goes (submission span, slot occupancy, per-execution phases).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grid import (NOOP, command_line, cpu_report, cpu_seconds_by_role, describe, load_line, local_grid,  # noqa: E402
                   median, pct, utc)

SLOTS = 2
# The script every run runs: NOOP, or with --prints one that writes a line (its output goes to the
# API as a log chunk), both in the floor and through RGrid.
SCRIPT = {"text": NOOP}
PRINTS = 'print("hello from the script")\n'


def sandbox_run(root: Path, i: int, interpreter: str, limits, argv: tuple[str, list[str]] = ("noop.py", []),
                timings: dict | None = None, via: str = "command") -> float:
    """One sandboxed run; returns seconds from workdir creation to workdir removal
    (timings["exit"]: from Popen to the sandbox's exit).

    via="command" starts it exactly as rgrid_runner.runner does (sandbox.limited_command: prlimit
    and setpriv exec bwrap; Popen uses vfork). via="preexec" applies the same limits and uid
    switch from Python between fork and exec (sandbox.preexec, Popen's user/group), as the runner
    did before: the same sandbox, measured slower even from a small process like this one
    (4093-4696 vs 4448-5208 runs/min here), so the floor uses "command"."""
    from rgrid_runner import sandbox

    t0 = time.monotonic()
    run_root = root / f"ex-{i}-a1"
    workdir = run_root / "work"
    workdir.mkdir(parents=True)
    (workdir / "noop.py").write_text(SCRIPT["text"])
    cmd = sandbox.bwrap_command(workdir, interpreter, argv[0], list(argv[1]))
    env = sandbox.script_env({})
    env.update(RGRID_EXECUTION_ID=f"ex-{i}", RGRID_ATTEMPT="1")
    uid = sandbox.sandbox_uid()
    if uid is not None:
        for dirpath, _dirs, files in os.walk(workdir):
            os.chown(dirpath, uid, uid)
            for f in files:
                os.lchown(os.path.join(dirpath, f), uid, uid)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if via == "command":
        start = dict(args=sandbox.limited_command(cmd, limits, uid))
    else:
        start = dict(args=cmd, user=uid, group=uid, extra_groups=[] if uid is not None else None,
                     preexec_fn=sandbox.preexec(limits))
    t_popen = time.monotonic()
    proc = subprocess.Popen(env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, start_new_session=True,
                            **start)
    os.close(out_w)
    os.close(err_w)
    err = b""
    with os.fdopen(out_r, "rb") as o, os.fdopen(err_r, "rb") as e:
        o.read()
        err = e.read()
    code = proc.wait()
    if timings is not None:
        timings["exit"] = time.monotonic() - t_popen
    if code != 0:
        raise RuntimeError(f"sandbox run exited {code}: {err.decode(errors='replace')[-500:]}")
    shutil.rmtree(run_root, ignore_errors=True)
    return time.monotonic() - t0


def runner_limits():
    """The Limits the runner uses for a default execution (settings defaults, default timeout)."""
    from rgrid_runner.sandbox import Limits
    from rgrid_service.settings import ServiceSettings

    s = ServiceSettings()
    return Limits(wall_seconds=s.default_timeout_seconds, cpu_seconds=s.default_timeout_seconds + 1,
                  memory_mb=s.sandbox_memory_mb, max_processes=s.sandbox_max_processes, max_file_mb=s.sandbox_max_file_mb)


def floor_throughput(n: int, concurrency: int = SLOTS, via: str = "command") -> dict:
    """n sandboxed no-op runs, `concurrency` at a time; jobs/minute."""
    from rgrid_runner.sandbox import resolve_interpreter

    interpreter = resolve_interpreter("python:3.11")
    limits = runner_limits()
    root = Path(tempfile.mkdtemp(prefix="rgb-floor-", dir="/tmp"))
    os.chmod(root, 0o755)  # the sandbox's own uid must reach its workdir, as in the runner
    try:
        sandbox_run(root, -1, interpreter, limits, via=via)  # warm the page cache
        cpu_before = cpu_seconds_by_role()
        t0 = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            durations = list(pool.map(lambda i: sandbox_run(root, i, interpreter, limits, via=via), range(n)))
        span = time.monotonic() - t0
        cpu = cpu_report(cpu_before, cpu_seconds_by_role(), span)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "span": span, "per_min": n / span * 60, "median_run": median(durations), "p95_run": pct(durations, 95),
            "cpu": cpu}


def rgrid_throughput(g, n: int, submitters: int = 4, warmup: int = 2, unique: bool = False, tag: str = "") -> dict:
    """n no-op executions submitted at once through the API of grid g; jobs/minute from the first
    create call to the last finished_at. unique: every execution's script differs (a comment), so
    none is held by the grid: each is uploaded, verified and fetched by its worker."""
    api, store = g.api(), g.store_client()
    batch_id = f"tp-{tag}-{os.urandom(4).hex()}"
    text = SCRIPT["text"]
    script = (lambda i: f"{text.rstrip()}  # {tag} {i}\n") if unique else (lambda i: text)
    warm = [g.submit(api, store, script_text=script(-1 - k)) for k in range(warmup)]
    g.wait_all(warm, poll=0.2)
    cpu_before = cpu_seconds_by_role()
    first = time.time()
    with ThreadPoolExecutor(submitters) as pool:
        ids = g.submit_batch(api, store, [script(i) for i in range(n)], batch_id, pool=pool)
    submitted = time.time()
    done = g.wait_batch(batch_id, n, poll=0.5, timeout=max(600, n * 3))
    seen = time.time()
    cpu_after = cpu_seconds_by_role()
    api.close()
    store.close()
    if set(done) != set(ids):
        raise RuntimeError(f"the batch holds {len(done)} executions, {len(ids)} were created")
    bad = [ex for ex in done.values() if ex["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} executions did not succeed, e.g. {bad[0]['id']}: {bad[0]['status']} "
                           f"{bad[0]['reason']}")
    started = [utc(ex["started_at"]) for ex in done.values()]
    finished = [utc(ex["finished_at"]) for ex in done.values()]
    queued = [utc(ex["queued_at"]) for ex in done.values()]
    last = max(finished)
    span = last - first
    busy = sum(f - s for s, f in zip(started, finished))
    return {
        "n": n, "span": span, "per_min": n / span * 60, "submit_span": submitted - first,
        "first_start_after": min(started) - first, "seen_after_last_finish": seen - last,
        "occupancy": busy / ((last - min(started)) * SLOTS),
        "claimed_to_finished": median([f - s for s, f in zip(started, finished)]),
        "claimed_to_finished_p95": pct([f - s for s, f in zip(started, finished)], 95),
        "queue_wait_median": median([s - q for q, s in zip(queued, started)]),
        "cpu": cpu_report(cpu_before, cpu_after, seen - first),
    }


def print_rgrid(r: dict) -> None:
    print(f"  RGrid: {r['n']} executions in {r['span']:.1f} s = {r['per_min']:.0f} jobs/min "
          f"(submitting took {r['submit_span']:.1f} s; first claim {r['first_start_after']:.2f} s after the first create)")
    print(f"         slot occupancy {r['occupancy'] * 100:.0f}% of {SLOTS} slots between first claim and last finish; "
          f"claimed->finished median {r['claimed_to_finished']:.3f} s (p95 {r['claimed_to_finished_p95']:.3f} s)")
    print("  " + r["cpu"].replace("\n", "\n  "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="executions (default 300)")
    ap.add_argument("--submitters", type=int, default=4, help="threads submitting through the API (default 4)")
    ap.add_argument("--fast", action="store_true", help="the test suite's timings instead of product defaults")
    ap.add_argument("--dispatch-interval", type=float, help="override RGRID_DISPATCH_INTERVAL_SECONDS")
    ap.add_argument("--set", action="append", default=[], metavar="RGRID_KNOB=VALUE",
                    help="any other RGRID_* setting for the grid (repeatable)")
    ap.add_argument("--skip-floor", action="store_true", help="RGrid only")
    ap.add_argument("--rounds", type=int, default=3,
                    help="RGrid runs, each between two floor runs; the ratio reported is the median (default 3)")
    ap.add_argument("--unique-scripts", action="store_true",
                    help="a different script per execution: every one is uploaded and fetched (no reuse by content)")
    ap.add_argument("--prints", action="store_true",
                    help="a script that prints one line instead of the no-op (its log chunk goes to the API)")
    opts = ap.parse_args()
    if opts.prints:
        SCRIPT["text"] = PRINTS
    env = dict(kv.split("=", 1) for kv in opts.set)
    if opts.dispatch_interval:
        env["RGRID_DISPATCH_INTERVAL_SECONDS"] = str(opts.dispatch_interval)

    print(f"throughput: {opts.n} {'printing' if opts.prints else 'no-op'} executions, RGrid (1 worker, {SLOTS} slots) vs the same sandbox run directly, "
          f"{SLOTS} at a time; {opts.rounds} round(s), each RGrid run between two floor runs")
    print(load_line() + "  [before]", flush=True)
    floors: list[dict] = []
    runs: list[dict] = []
    with local_grid(workers=1, fast=opts.fast, env=env) as g:
        print("  " + describe(g), flush=True)
        for k in range(opts.rounds):
            if not opts.skip_floor and not floors:
                floors.append(floor_throughput(opts.n))
                print(f"  floor:  {floors[-1]['per_min']:.0f} jobs/min  [{load_line()}]", flush=True)
            runs.append(rgrid_throughput(g, opts.n, opts.submitters, unique=opts.unique_scripts, tag=f"r{k}"))
            print(f"  round {k + 1}:")
            print_rgrid(runs[-1])
            print(f"         [{load_line()}]", flush=True)
            if not opts.skip_floor:
                floors.append(floor_throughput(opts.n))
                print(f"  floor:  {floors[-1]['per_min']:.0f} jobs/min  [{load_line()}]", flush=True)
    print()
    ratios = []
    for k, r in enumerate(runs):
        line = f"round {k + 1}: RGrid {r['per_min']:6.0f} jobs/min ({r['n']} in {r['span']:.1f} s)"
        if floors:
            floor = (floors[k]["per_min"] + floors[k + 1]["per_min"]) / 2
            ratios.append(r["per_min"] / floor)
            line += (f"   floor {floor:6.0f} (mean of {floors[k]['per_min']:.0f} before and "
                     f"{floors[k + 1]['per_min']:.0f} after)   ratio {ratios[-1]:.3f}")
        print(line)
    if ratios:
        ratio = median(ratios)
        print(f"one sandbox run median {median([f['median_run'] for f in floors]):.3f} s")
        print(f"ratio RGrid / floor, median of {len(ratios)} round(s): {ratio:.3f}   "
              f"(lowest {min(ratios):.3f}, highest {max(ratios):.3f})   goal >= 0.6: {'MET' if ratio >= 0.6 else 'NOT MET'}")
    print(load_line() + "  [after]")
    print(f"\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()

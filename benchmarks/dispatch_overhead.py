"""Dispatch overhead: one no-op script through RGrid vs through Ray's own Jobs API, same cluster.

    .venv/bin/python benchmarks/dispatch_overhead.py [--runs 20] [--warmup 2] [--workers 1]
                                                      [--ray-on head|worker] [--fast]
                                                      [--set RGRID_X=V ...]

Starts a throwaway local grid and, on that one Ray cluster, alternates (RGrid, Ray Jobs, RGrid by
poll, RGrid, Ray Jobs, RGrid by poll, ...) so that whatever else loads the machine weighs on all
equally:

- RGrid (the figure the goals are about): `rgrid run noop.py`'s own client code, in process: the
  CLI's submit (checksums, create asking to queue at once) and its follow (the run's Server-Sent
  Events stream) until the `end` event. As noop.py is held by content since the warm-ups it is not
  uploaded again (no presigned PUT, no submit call), just as Ray's working_dir package is found in
  Ray's cache. The CLI's start-up (imports, reading its config) is not counted, as Ray's client is
  made once too; nor are the outputs' download after the end (a no-op run has none to fetch).
- RGrid by poll (the figure of the earlier measurements, kept beside it): the same create from
  benchmarks/_grid.py, then GET /v1/executions/{id} every 50 ms until it reports `succeeded`.
- Ray Jobs: JobSubmissionClient(dashboard on 127.0.0.1).submit_job(entrypoint="<python> noop.py",
  runtime_env={"working_dir": <dir holding noop.py>}) until the status is SUCCEEDED (polled every
  50 ms). The same interpreter the RGrid sandbox uses runs it. The working_dir package is
  uploaded once and then found in Ray's cache (as a repeat user's would be). The grid is started
  with benchmarks/_rayshim on its PYTHONPATH: without it Ray Jobs cannot submit at all on the local
  grid (see that file). The head runs with --num-cpus 0;
  Ray Jobs' default (no entrypoint resources) pins the job driver to the head with 0 CPUs, which
  schedules fine there. --ray-on worker asks for one rgrid_slot instead, so the entrypoint runs on
  the worker node like RGrid's does.

Prints median and p90 of each, the ratio RGrid / Ray Jobs against the goals (#3: at most a third of
Ray Jobs' time, #11: 0.08, #13: 0.04), and where RGrid's time goes (database timestamps).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grid import command_line, describe, load_line, local_grid, median, pct, utc  # noqa: E402

RAY_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
GOALS = (("#3", 1 / 3), ("#11", 0.08), ("#13", 0.04))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="measured runs of each (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured runs of each first (default 2)")
    ap.add_argument("--workers", type=int, default=1, choices=(1, 2), help="worker nodes (default 1)")
    ap.add_argument("--ray-on", choices=("head", "worker"), default="head",
                    help="where the Ray job's entrypoint runs (default: Ray's own default, the head)")
    ap.add_argument("--fast", action="store_true", help="the test suite's timings instead of product defaults")
    ap.add_argument("--poll", type=float, default=0.05, help="status poll interval in seconds (default 0.05)")
    ap.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="an RGRID_* (or RAY_*) setting for the grid (repeatable)")
    opts = ap.parse_args()

    print("dispatch overhead: RGrid vs Ray Jobs, no-op script, same local Ray cluster")
    print(load_line() + "  [before]", flush=True)
    from ray.job_submission import JobSubmissionClient

    # The SDK logs "package already exists, skipping upload" on every submission.
    logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)

    from rgrid_core.constants import SLOT_RESOURCE
    from rgrid_runner.sandbox import resolve_interpreter

    interpreter = resolve_interpreter("python:3.11")
    with local_grid(workers=opts.workers, fast=opts.fast, ray_jobs=True,
                    env=dict(kv.split("=", 1) for kv in opts.set)) as g, tempfile.TemporaryDirectory(prefix="rgb-job-") as wd:
        print("  " + describe(g))
        Path(wd, "noop.py").write_text("pass\n")
        assert g.state.dashboard_url.startswith("http://127.0.0.1:"), g.state.dashboard_url
        ray_jobs = JobSubmissionClient(g.state.dashboard_url)
        ray_kwargs = {"entrypoint_resources": {SLOT_RESOURCE: 1}} if opts.ray_on == "worker" else {}

        api, store = g.api(), g.store_client()
        from rgrid.cli.follow import stream_logs
        from rgrid.cli.run import submit as cli_submit
        from rgrid.client import Client

        cli = Client(g.state.api_url, g.state.api_key)  # as `rgrid run` makes it (connect.client)
        script = str(Path(wd, "noop.py"))

        def rgrid_once() -> tuple[float, dict]:
            """`rgrid run noop.py`: the CLI's submit, then its follow until the end event."""
            t0, w0 = time.monotonic(), time.time()
            ex_id = cli_submit(cli, script, [], {}, "python:3.11", None)["id"]
            w1 = time.time()
            end = stream_logs(cli, ex_id)
            elapsed, w2 = time.monotonic() - t0, time.time()
            if end["status"] != "succeeded":
                raise RuntimeError(f"RGrid run {ex_id} ended {end['status']}: {end['reason']}")
            ex = api.get(f"/v1/executions/{ex_id}").json()  # its timeline, after the clock stopped
            return elapsed, {**ex, "_w0": w0, "_w1": w1, "_w2": w2}

        def rgrid_polled() -> tuple[float, dict]:
            t0, w0 = time.monotonic(), time.time()
            ex_id = g.submit(api, store)
            w1 = time.time()
            ex = g.wait_one(api, ex_id, poll=opts.poll)
            elapsed, w2 = time.monotonic() - t0, time.time()
            if ex["status"] != "succeeded":
                raise RuntimeError(f"RGrid run {ex_id} ended {ex['status']}: {ex['reason']}")
            return elapsed, {**ex, "_w0": w0, "_w1": w1, "_w2": w2}

        def ray_once() -> float:
            t0 = time.monotonic()
            sid = ray_jobs.submit_job(entrypoint=f"{interpreter} noop.py", runtime_env={"working_dir": wd},
                                      **ray_kwargs)
            deadline = t0 + 120
            while True:
                status = str(ray_jobs.get_job_status(sid).value)
                if status in RAY_TERMINAL:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray job {sid} still {status} after 120 s (head has --num-cpus 0?)")
                time.sleep(opts.poll)
            elapsed = time.monotonic() - t0
            if status != "SUCCEEDED":
                raise RuntimeError(f"Ray job {sid} ended {status}: {ray_jobs.get_job_info(sid).message}")
            return elapsed

        # The head's job agent comes up a little after the node: wait for the first submission.
        deadline = time.monotonic() + 90
        while True:
            try:
                ray_once()
                break
            except RuntimeError as e:
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(1)
        for _ in range(opts.warmup):
            rgrid_once()
            ray_once()
            rgrid_polled()
        rg, ry, rp, views, polled_views = [], [], [], [], []
        for i in range(opts.runs):
            t, ex = rgrid_once()
            rg.append(t)
            views.append(ex)
            ry.append(ray_once())
            t, ex = rgrid_polled()
            rp.append(t)
            polled_views.append(ex)
            print(f"  run {i + 1:>2}/{opts.runs}: RGrid {rg[-1]:.3f} s   Ray Jobs {ry[-1]:.3f} s   "
                  f"RGrid by poll {rp[-1]:.3f} s", flush=True)
        api.close()
        store.close()
        cli.http.close()

    phases, stages = phases_of(views, "finished -> the end event on the stream")
    polled_phases, polled_stages = phases_of(polled_views, f"finished -> seen by the {opts.poll * 1000:.0f} ms poll")

    print(load_line() + "  [after]")
    m_rg, m_ry, m_rp = median(rg), median(ry), median(rp)
    ratio = m_rg / m_ry
    print()
    print(f"{'':34}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}")
    for name, xs in (("RGrid (rgrid run: submit -> end)", rg), ("Ray Jobs (SUCCEEDED)", ry),
                     ("RGrid by poll (API -> succeeded)", rp)):
        print(f"{name:34}{median(xs):>9.3f}s{pct(xs, 90):>9.3f}s{min(xs):>9.3f}s{max(xs):>9.3f}s")
    print(f"\nratio RGrid / Ray Jobs (medians): {ratio:.3f}   "
          + "   ".join(f"goal {name} <= {goal:.2f}: {'MET' if ratio <= goal else 'NOT MET'}" for name, goal in GOALS))
    print(f"ratio RGrid by poll / Ray Jobs (medians, as measured before #13): {m_rp / m_ry:.3f}")
    print(f"({opts.runs} runs each after {opts.warmup} warm-ups, interleaved; {opts.workers} worker node(s); "
          f"Ray entrypoint on the {opts.ray_on}; Ray Jobs and RGrid by poll polled every {opts.poll * 1000:.0f} ms)")
    for title, ph, st in (("RGrid", phases, stages), ("RGrid by poll", polled_phases, polled_stages)):
        print(f"\n{title} phases (database clock, median / p90):")
        for name, xs in ph.items():
            print(f"  {name:46} {median(xs):.3f} s / {pct(xs, 90):.3f} s")
        print(f"{title} stages (the run's timeline, median / p90; staging = claimed, running = the runner "
              "started the script):")
        for name, xs in st.items():
            print(f"  {name:46} {median(xs):.3f} s / {pct(xs, 90):.3f} s")
    print(f"\nreproduce: {command_line()}")


def phases_of(views: list[dict], seen: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Where each run's time went: the client's own clock for the create and for when it learnt of
    the end, the database clock (same machine, milliseconds on SQLite too) for the row's insert and
    queued -> started -> finished; and the same span by the run's timeline: the tick, Ray's task path and the claim, the runner's set-up to the script's start (as
    the runner saw it), the script and the finish."""
    phases: dict[str, list[float]] = {"create (+ PUT + submit if new) (client)": [],
                                      "  of it: client -> row inserted": [], "  of it: row inserted -> answer": [],
                                      "queued -> claimed (dispatch tick, Ray task)": [],
                                      "claimed -> finished (stage, sandbox, commit)": [], seen: []}
    stages: dict[str, list[float]] = {}
    for ex in views:
        q, s_, f = (utc(ex[k]) for k in ("queued_at", "started_at", "finished_at"))
        phases["create (+ PUT + submit if new) (client)"].append(ex["_w1"] - ex["_w0"])
        created = utc(ex["created_at"])
        phases["  of it: client -> row inserted"].append(created - ex["_w0"])
        phases["  of it: row inserted -> answer"].append(ex["_w1"] - created)
        phases["queued -> claimed (dispatch tick, Ray task)"].append(s_ - q)
        phases["claimed -> finished (stage, sandbox, commit)"].append(f - s_)
        phases[seen].append(ex["_w2"] - f)
        at = {step["stage"]: utc(step["at"]) for step in ex.get("timeline") or []}
        for a, b in (("queued", "dispatched"), ("dispatched", "staging"), ("staging", "running"),
                     ("running", "finished")):
            if a in at and b in at:
                stages.setdefault(f"{a} -> {b}", []).append(at[b] - at[a])
    return phases, stages


if __name__ == "__main__":
    main()

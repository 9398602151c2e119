"""API read load: RGrid's `GET /v1/executions/{id}` and its logs read vs the same stack by hand.

    .venv/bin/python benchmarks/api_load.py [--seconds 15] [--connections 64] [--threads 2]
                                            [--runs 2000] [--rounds 2] [--api-workers 1]

Fills a throwaway SQLite database (the local grid's kind) through RGrid's own schema with --runs
finished executions (each with an attempt and a few log chunks), then serves, one at a time, on a
free 127.0.0.1 port with the same uvicorn as the grid's API (uvloop, httptools, one process unless
--api-workers):

- rgrid: the real API (rgrid_service.api.app:create_app), with a tenant API key;
- same-stack: FastAPI + SQLAlchemy Core on the same file doing a read's work by hand (the key's
  hash looked up, the tenant's execution by id and its attempts; or its log chunks after a cursor);
- minimal: FastAPI answering a fixed execution from one sync route (the stack's ceiling).

Each is loaded with Debian's `wrk` (-t threads -c connections -d seconds, --latency) on one
execution id, in rounds (rgrid, same-stack, minimal, ... each round in that order) so that the
machine's drift weighs on all of them. Prints requests/s, p50 and p99 per app and endpoint, the
errors wrk saw (non-2xx, socket errors), and the ratios rgrid / same-stack (issue #14's goal:
>= 0.8) as the median over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _grid import command_line, load_line, median  # noqa: E402

GOAL = 0.8


def fill(url: str, runs: int) -> tuple[str, str]:
    """A tenant with `runs` succeeded executions, each with one attempt and three log chunks.
    Returns (API key, the id of one execution in the middle)."""
    from datetime import datetime, timedelta

    from sqlalchemy import insert

    from rgrid_service import auth
    from rgrid_service.db.models import Execution, ExecutionAttempt, LogChunk
    from rgrid_service.db.session import make_engine, upgrade_schema

    upgrade_schema(url)
    engine = make_engine(url)
    key = auth.create_key(engine, "tenant-bench")
    t0 = datetime(2026, 11, 1)
    ids = [f"ex-{uuid.uuid4().hex[:12]}" for _ in range(runs)]
    inputs = [{"name": "job.py", "kind": "file", "size": 20, "sha256": "0" * 64, "object_key": "blobs/x/" + "0" * 64}]
    with engine.begin() as conn:
        for start in range(0, runs, 1000):
            part = ids[start:start + 1000]
            conn.execute(insert(Execution), [dict(
                id=i, tenant_id="tenant-bench", status="succeeded", script="job.py", args=["a", "b"], env={},
                env_keys=["TOKEN"], runtime="python:3.11", timeout_seconds=600, inputs=inputs, attempt=1,
                worker_id="w-1", exit_code=0, created_at=t0 + timedelta(seconds=n), queued_at=t0 + timedelta(seconds=n),
                started_at=t0 + timedelta(seconds=n, milliseconds=30), finished_at=t0 + timedelta(seconds=n + 1),
                cost_eur=0.0001) for n, i in enumerate(part, start=start)])
            conn.execute(insert(ExecutionAttempt), [dict(
                execution_id=i, attempt=1, worker_id="w-1", started_at=t0 + timedelta(seconds=n, milliseconds=30),
                running_at=t0 + timedelta(seconds=n, milliseconds=40), finished_at=t0 + timedelta(seconds=n + 1),
                outcome="succeeded", running_on_worker=1) for n, i in enumerate(part, start=start)])
            conn.execute(insert(LogChunk), [dict(execution_id=i, attempt=1, stream=s, data=f"line {k} of {i}\n".encode() * 4)
                                           for i in part for k, s in enumerate(("stdout", "stdout", "stderr"))])
    engine.dispose()
    return key, ids[len(ids) // 2]


def serve(target: str, port: int, env: dict[str, str], workers: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"{target} did not start; see {log}")
            time.sleep(0.2)
    raise SystemExit(f"{target} did not answer within 60 s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url: str, key: str, seconds: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-H",
                          f"Authorization: Bearer {key}", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sock.group(1).strip() if sock else "none"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2000, help="executions stored (default 2000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes of every app (default 1)")
    opts = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: `apt-get install wrk` (scripts/setup.sh --with-tests does).")
    from rgrid_service.localgrid.procs import free_ports

    home = Path(tempfile.mkdtemp(prefix="rgb-api-", dir="/tmp"))
    try:
        url = f"sqlite:///{home / 'rgrid.db'}"
        key, ex_id = fill(url, opts.runs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
        env.update(RGRID_DATABASE_URL=url, RGRID_S3_ENDPOINT="127.0.0.1:1", RGRID_S3_ACCESS_KEY="x",
                   RGRID_S3_SECRET_KEY="y", RGRID_SECRET_KEY="bench-" + "k" * 40, PYTHONPATH=str(ROOT))
        print(f"API read load: wrk -t{opts.threads} -c{opts.connections} -d{opts.seconds}s per app and endpoint, "
              f"{opts.rounds} round(s), {opts.runs} executions stored (SQLite), {opts.api_workers} process(es) per app")
        print(load_line() + "  [before]", flush=True)
        apps = {"rgrid": "rgrid_service.api.app:create_app", "same-stack": "benchmarks._apiapps:same_stack_app",
                "minimal": "benchmarks._apiapps:minimal_app"}
        endpoints = {"execution": f"/v1/executions/{ex_id}", "logs": f"/v1/executions/{ex_id}/logs?after=0"}
        results: dict[tuple[str, str], list[dict]] = {}
        fixed = None
        for r in range(opts.rounds):
            for name, target in apps.items():
                port = free_ports(1)[0]
                if name == "minimal":
                    env["RGRID_BENCH_EXECUTION_JSON"] = json.dumps(fixed)
                proc = serve(target, port, env, opts.api_workers, home / f"{name}.log")
                try:
                    if fixed is None:  # the rgrid answer, for the minimal app to hand back verbatim
                        import httpx

                        fixed = httpx.get(f"http://127.0.0.1:{port}{endpoints['execution']}",
                                          headers={"Authorization": f"Bearer {key}"}).json()
                    for ep, path in endpoints.items():
                        if name == "minimal" and ep != "execution":
                            continue
                        res = wrk(f"http://127.0.0.1:{port}{path}", key, opts.seconds, opts.connections, opts.threads)
                        results.setdefault((name, ep), []).append(res)
                        print(f"  round {r + 1} {name:10s} {ep:9s} {res['rps']:8.0f} req/s  p50 {res['p50']:7.1f} ms  "
                              f"p99 {res['p99']:7.1f} ms  non-2xx {res['non2xx']}  socket errors {res['socket_errors']}",
                              flush=True)
                finally:
                    stop(proc)
        print()
        for ep in endpoints:
            ratios = [a["rps"] / b["rps"] for a, b in zip(results[("rgrid", ep)], results[("same-stack", ep)])]
            line = (f"{ep:9s}: rgrid {median([x['rps'] for x in results[('rgrid', ep)]]):6.0f} req/s vs same-stack "
                    f"{median([x['rps'] for x in results[('same-stack', ep)]]):6.0f}: ratio {median(ratios):.2f} "
                    f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})   goal >= {GOAL}: "
                    f"{'MET' if median(ratios) >= GOAL else 'NOT MET'}")
            if ("minimal", ep) in results:
                line += f"   minimal app {median([x['rps'] for x in results[('minimal', ep)]]):.0f} req/s"
            print(line)
        print(load_line() + "  [after]")
        print(f"\nreproduce: {command_line()}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""API read load: RGrid's `GET /v1/executions/{id}` and its logs read vs the same stack by hand;
the API under many connections; and what followers (Server-Sent Events) cost.

    .venv/bin/python benchmarks/api_load.py [--mode compare|load|follow|all] [--seconds 15]
        [--connections 64] [--threads 2] [--runs 2000] [--rounds 2] [--api-workers 1]
        [--load-seconds 60] [--load-connections 256] [--load-workers 2] [--followers 50,200]
        [--follow-seconds 20]

Fills a throwaway SQLite database (the local grid's kind) through RGrid's own schema with --runs
finished executions (each with an attempt and a few log chunks) and as many running ones as the
most followers, then:

compare (issue #14's ratio): serves, one at a time, on a free 127.0.0.1 port with the same uvicorn
(uvloop, httptools, one process unless --api-workers):
- rgrid: the real API (`python -m rgrid_service.api`, its production entrypoint), with a tenant key;
- rgrid-nokeycache: the same with RGRID_API_KEY_CACHE_SECONDS=0 (every request looks its key up);
- same-stack: FastAPI + SQLAlchemy Core on the same file doing a read's work by hand (the key's
  hash looked up, the tenant's execution by id and its attempts; or its log chunks after a cursor);
- minimal: FastAPI answering a fixed execution from one sync route (the stack's ceiling).
Each is loaded with Debian's `wrk` (-t threads -c connections -d seconds, --latency) on one
execution id, in rounds (each app in that order every round) so that the machine's drift weighs on
all of them. Prints requests/s, p50 and p99 per app and endpoint, the errors wrk saw (non-2xx,
socket errors), and the ratios rgrid / same-stack (goal >= 0.8) as the median over rounds.

load: RGrid alone in --load-workers processes (production's RGRID_API_WORKERS), `wrk
-c<load-connections> -d<load-seconds>` on each read, a fresh server per read: errors, p50/p99, and
from the API's own /metrics (operator key) the wait for a database connection during the run
(rgrid_db_pool_wait_seconds: p99 as the histogram bucket it falls in, mean) and its largest since
the server started (rgrid_db_pool_wait_max_seconds; a 5 s warm-up at -c64 included).

follow: RGrid in one process (benchmarks._apiapps.counted_rgrid_app: the API plus a count of its
SQL statements), N concurrent SSE followers of N running runs (no new output: what a follower
costs while it waits) for each N of --followers; over --follow-seconds the API process's CPU (from
/proc), its resident memory before and with the followers, and the SQL statements per second.
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


def fill(url: str, runs: int, running: int = 0) -> dict:
    """A tenant with `runs` succeeded executions, each with one attempt and three log chunks, and
    `running` running ones (an attempt each, no output yet). Returns the tenant's API key, an
    operator key (for /metrics), the id of one succeeded execution in the middle and the running ids."""
    from datetime import datetime, timedelta

    from sqlalchemy import insert

    from rgrid_service import auth
    from rgrid_service.db.models import Execution, ExecutionAttempt, LogChunk
    from rgrid_service.db.session import make_engine, upgrade_schema

    upgrade_schema(url)
    engine = make_engine(url)
    key = auth.create_key(engine, "tenant-bench")
    operator_key = auth.create_key(engine, "ops-bench", scope=auth.OPERATOR_SCOPE)
    t0 = datetime(2026, 11, 1)
    ids = [f"ex-{uuid.uuid4().hex[:12]}" for _ in range(runs)]
    running_ids = [f"ex-{uuid.uuid4().hex[:12]}" for _ in range(running)]
    inputs = [{"name": "job.py", "kind": "file", "size": 20, "sha256": "0" * 64, "object_key": "blobs/x/" + "0" * 64}]
    common = dict(tenant_id="tenant-bench", script="job.py", args=["a", "b"], env={}, env_keys=["TOKEN"],
                  runtime="python:3.11", timeout_seconds=600, inputs=inputs, attempt=1, worker_id="w-1")
    with engine.begin() as conn:
        for start in range(0, runs, 1000):
            part = ids[start:start + 1000]
            conn.execute(insert(Execution), [dict(
                common, id=i, status="succeeded", exit_code=0, created_at=t0 + timedelta(seconds=n),
                queued_at=t0 + timedelta(seconds=n), started_at=t0 + timedelta(seconds=n, milliseconds=30),
                finished_at=t0 + timedelta(seconds=n + 1), cost_eur=0.0001) for n, i in enumerate(part, start=start)])
            conn.execute(insert(ExecutionAttempt), [dict(
                execution_id=i, attempt=1, worker_id="w-1", started_at=t0 + timedelta(seconds=n, milliseconds=30),
                running_at=t0 + timedelta(seconds=n, milliseconds=40), finished_at=t0 + timedelta(seconds=n + 1),
                outcome="succeeded", running_on_worker=1) for n, i in enumerate(part, start=start)])
            conn.execute(insert(LogChunk), [dict(execution_id=i, attempt=1, stream=s, data=f"line {k} of {i}\n".encode() * 4)
                                           for i in part for k, s in enumerate(("stdout", "stdout", "stderr"))])
        now = datetime.utcnow()
        if running_ids:
            conn.execute(insert(Execution), [dict(common, id=i, status="running", created_at=now, queued_at=now,
                                                  started_at=now) for i in running_ids])
            conn.execute(insert(ExecutionAttempt), [dict(execution_id=i, attempt=1, worker_id="w-1", started_at=now,
                                                         running_at=now, running_on_worker=1) for i in running_ids])
    engine.dispose()
    return {"key": key, "operator_key": operator_key, "execution": ids[len(ids) // 2], "running": running_ids}


def uvicorn_command(target: str, workers: int) -> list[str]:
    """The reference apps (and the counted RGrid app) under the uvicorn the grid's API runs."""
    cmd = [sys.executable, "-m", "uvicorn", target, "--factory", "--loop", "uvloop", "--http", "httptools"]
    return cmd + (["--workers", str(workers)] if workers > 1 else [])


def rgrid_command(workers: int) -> list[str]:
    """RGrid's API as production starts it (rgrid_service/api/__main__.py: uvloop, httptools)."""
    return [sys.executable, "-m", "rgrid_service.api", "--workers", str(workers)]


def serve(cmd: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = cmd + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
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
                raise SystemExit(f"{' '.join(cmd)} did not start; see {log}")
            time.sleep(0.2)
    raise SystemExit(f"{' '.join(cmd)} did not answer within 60 s; see {log}")


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
    lat = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)$", out, re.M))
    if set(lat) != {"50", "99"}:
        raise SystemExit(f"wrk's output has no latency distribution:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]), "requests": total,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": sock.group(1).strip() if sock else "none"}


def row(label: str, res: dict) -> str:
    return (f"  {label}  {res['rps']:8.0f} req/s  p50 {res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms  "
            f"non-2xx {res['non2xx']}  socket errors {res['socket_errors']}")


def compare(opts, fx: dict, env: dict, home: Path) -> None:
    from rgrid_service.localgrid.procs import free_ports

    print(f"\n== compare: wrk -t{opts.threads} -c{opts.connections} -d{opts.seconds}s per app and endpoint, "
          f"{opts.rounds} round(s), {opts.api_workers} process(es) per app", flush=True)
    apps = {"rgrid": (rgrid_command(opts.api_workers), {}),
            "rgrid-nokeycache": (rgrid_command(opts.api_workers), {"RGRID_API_KEY_CACHE_SECONDS": "0"}),
            "same-stack": (uvicorn_command("benchmarks._apiapps:same_stack_app", opts.api_workers), {}),
            "minimal": (uvicorn_command("benchmarks._apiapps:minimal_app", opts.api_workers), {})}
    ex_id, key = fx["execution"], fx["key"]
    endpoints = {"execution": f"/v1/executions/{ex_id}", "logs": f"/v1/executions/{ex_id}/logs?after=0"}
    results: dict[tuple[str, str], list[dict]] = {}
    fixed = None
    for r in range(opts.rounds):
        for name, (cmd, extra) in apps.items():
            port = free_ports(1)[0]
            app_env = {**env, **extra}
            if name == "minimal":
                app_env["RGRID_BENCH_EXECUTION_JSON"] = json.dumps(fixed)
            proc = serve(cmd, port, app_env, home / f"{name}.log")
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
                    print(row(f"round {r + 1} {name:16s} {ep:9s}", res), flush=True)
            finally:
                stop(proc)
    print()
    for ep in endpoints:
        for name in ("rgrid", "rgrid-nokeycache"):
            ratios = [a["rps"] / b["rps"] for a, b in zip(results[(name, ep)], results[("same-stack", ep)])]
            line = (f"{ep:9s}: {name:16s} {median([x['rps'] for x in results[(name, ep)]]):6.0f} req/s vs same-stack "
                    f"{median([x['rps'] for x in results[('same-stack', ep)]]):6.0f}: ratio {median(ratios):.2f} "
                    f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})")
            if name == "rgrid":
                line += f"   goal >= {GOAL}: {'MET' if median(ratios) >= GOAL else 'NOT MET'}"
            print(line)
        if ("minimal", ep) in results:
            print(f"{ep:9s}: minimal app {median([x['rps'] for x in results[('minimal', ep)]]):.0f} req/s")


def scrape(base: str, operator_key: str) -> dict:
    """The API's pool-wait figures: cumulative bucket counts by bound, count, sum and the maximum."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {operator_key}"}, timeout=30).text
    out = {"buckets": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "rgrid_db_pool_wait_seconds_bucket":
                out["buckets"][float(s.labels["le"])] = s.value
            elif s.name in ("rgrid_db_pool_wait_seconds_count", "rgrid_db_pool_wait_seconds_sum",
                            "rgrid_db_pool_wait_max_seconds"):
                out[s.name.removeprefix("rgrid_db_pool_wait_")] = s.value
    return out


def pool_wait_between(before: dict, after: dict) -> dict:
    count = after["seconds_count"] - before["seconds_count"]
    p99 = None
    for le in sorted(after["buckets"]):
        if after["buckets"][le] - before["buckets"].get(le, 0) >= 0.99 * count:
            p99 = le
            break
    return {"checkouts": count, "p99_le": p99, "mean": (after["seconds_sum"] - before["seconds_sum"]) / max(count, 1),
            "max": after["max_seconds"]}


def load(opts, fx: dict, env: dict, home: Path) -> None:
    from rgrid_service.localgrid.procs import free_ports

    print(f"\n== load: rgrid alone in {opts.load_workers} process(es), wrk -t{opts.threads} "
          f"-c{opts.load_connections} -d{opts.load_seconds}s per read, a fresh server per read", flush=True)
    ex_id = fx["execution"]
    for ep, path in {"execution": f"/v1/executions/{ex_id}", "logs": f"/v1/executions/{ex_id}/logs?after=0"}.items():
        port = free_ports(1)[0]
        base = f"http://127.0.0.1:{port}"
        proc = serve(rgrid_command(opts.load_workers), port, env, home / "rgrid-load.log")
        try:
            wrk(base + path, fx["key"], 5, 64, opts.threads)  # warm: every process, its pool
            before = scrape(base, fx["operator_key"])
            res = wrk(base + path, fx["key"], opts.load_seconds, opts.load_connections, opts.threads)
            wait = pool_wait_between(before, scrape(base, fx["operator_key"]))
        finally:
            stop(proc)
        print(row(f"{ep:9s}", res) + f"  ({res['requests']} requests)")
        p99 = "over 30 s" if wait["p99_le"] is None else f"<= {wait['p99_le'] * 1000:g} ms"
        print(f"  {ep:9s}  pool wait during the run: {wait['checkouts']:.0f} checkouts, p99 {p99}, "
              f"mean {wait['mean'] * 1000:.2f} ms; max since start {wait['max'] * 1000:.1f} ms", flush=True)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    kib = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M).group(1)
    return int(kib) / 1024


def follow(opts, fx: dict, env: dict, home: Path) -> None:
    import asyncio

    import httpx

    from rgrid_service.localgrid.procs import free_ports

    print(f"\n== follow: rgrid in one process, N SSE followers of N running runs, {opts.follow_seconds} s each",
          flush=True)
    headers = {"Authorization": f"Bearer {fx['key']}"}

    async def measure(base: str, pid: int, n: int) -> dict:
        opened, failed = [], []

        async def one(client: httpx.AsyncClient, eid: str) -> None:
            try:
                async with client.stream("GET", f"/v1/executions/{eid}/follow") as r:
                    if r.status_code != 200:
                        failed.append(r.status_code)
                        return
                    opened.append(eid)
                    async for _ in r.aiter_raw():
                        pass
            except httpx.HTTPError as e:
                failed.append(repr(e))

        async def window(client: httpx.AsyncClient) -> dict:
            c0, s0, t0 = proc_cpu_seconds(pid), (await client.get("/bench/statements")).json()["statements"], time.monotonic()
            await asyncio.sleep(opts.follow_seconds)
            c1, s1, t1 = proc_cpu_seconds(pid), (await client.get("/bench/statements")).json()["statements"], time.monotonic()
            return {"cpu": (c1 - c0) / (t1 - t0), "sql": (s1 - s0) / (t1 - t0), "rss": proc_rss_mib(pid)}

        limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=httpx.Timeout(60, read=None),
                                     limits=limits) as client:
            idle = await window(client)
            tasks = [asyncio.create_task(one(client, eid)) for eid in fx["running"][:n]]
            deadline = time.monotonic() + 120
            while len(opened) + len(failed) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # past the first reads of every stream
            busy = await window(client)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"n": n, "opened": len(opened), "failed": failed[:3], "idle": idle, "busy": busy}

    for n in opts.followers:
        port = free_ports(1)[0]
        proc = serve(uvicorn_command("benchmarks._apiapps:counted_rgrid_app", 1), port, env, home / "rgrid-follow.log")
        try:
            m = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid, n))
        finally:
            stop(proc)
        idle, busy = m["idle"], m["busy"]
        print(f"  {n:4d} followers ({m['opened']} streaming, {len(m['failed'])} refused or failed {m['failed']}): "
              f"API CPU {busy['cpu'] * 100:.1f} % of a core (idle {idle['cpu'] * 100:.1f} %), "
              f"{(busy['cpu'] - idle['cpu']) * 100 / n:.3f} % per follower; RSS {busy['rss']:.1f} MiB "
              f"(idle {idle['rss']:.1f}), {(busy['rss'] - idle['rss']) * 1024 / n:.0f} KiB per follower; "
              f"SQL {busy['sql']:.0f} statements/s (idle {idle['sql']:.1f}), {(busy['sql'] - idle['sql']) / n:.1f} per "
              f"follower", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="compare", help="compare, load, follow, several comma-separated, or all")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2000, help="executions stored (default 2000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--api-workers", type=int, default=1, help="compare: processes of every app (default 1)")
    ap.add_argument("--load-seconds", type=int, default=60)
    ap.add_argument("--load-connections", type=int, default=256)
    ap.add_argument("--load-workers", type=int, default=2, help="load: RGrid's API processes (default 2, production's)")
    ap.add_argument("--followers", default="50,200", help="follow: how many followers, comma-separated")
    ap.add_argument("--follow-seconds", type=int, default=20)
    opts = ap.parse_args()
    opts.followers = [int(n) for n in opts.followers.split(",")]
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: `apt-get install wrk` (scripts/setup.sh --with-tests does).")

    home = Path(tempfile.mkdtemp(prefix="rgb-api-", dir="/tmp"))
    try:
        url = f"sqlite:///{home / 'rgrid.db'}"
        modes = ("compare", "load", "follow") if opts.mode == "all" else tuple(opts.mode.split(","))
        if not set(modes) <= {"compare", "load", "follow"}:
            raise SystemExit(f"--mode is compare, load, follow (several comma-separated) or all, not {opts.mode!r}.")
        fx = fill(url, opts.runs, max(opts.followers) if "follow" in modes else 0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(RGRID_DATABASE_URL=url, RGRID_S3_ENDPOINT="127.0.0.1:1", RGRID_S3_ACCESS_KEY="x",
                   RGRID_S3_SECRET_KEY="y", RGRID_SECRET_KEY="bench-" + "k" * 40, PYTHONPATH=str(ROOT))
        print(f"API benchmarks ({', '.join(modes)}): {opts.runs} executions stored (SQLite), commit {commit()}")
        print(load_line() + "  [before]", flush=True)
        for mode in modes:
            {"compare": compare, "load": load, "follow": follow}[mode](opts, fx, env, home)
        print("\n" + load_line() + "  [after]")
        print(f"\nreproduce: {command_line()}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


if __name__ == "__main__":
    main()

"""Baselines the plan asks for: single-node max throughput, database latency under 50+ concurrent
queries, sandbox start time under 10+ concurrent starts.

    .venv/bin/python -m benchmarks.baselines [--throughput-n 100] [--threads 64] [--per-thread 20]
                                             [--starts 12] [--rounds 5] [--skip-grid] [--skip-pg]

(a) Single-node max throughput: a throwaway 1-worker grid (2 slots, product timings), N no-op
    executions submitted at once through the API (benchmarks/throughput.py's RGrid half); jobs/min.
(b) Database latency: --threads threads (default 64) released together by a barrier; each takes
    --per-thread fresh queued executions through the hot queries of their life, with the product's
    own engine (rgrid_service.db.session.engine_for: its pool, its SQLite pragmas) and code:
      claim  = lifecycle.claim_run (the runner's atomic UPDATE ... WHERE status='queued' + attempt row)
      get    = what GET /v1/executions/{id} runs: API-key lookup, the execution, its attempts
      renew  = lifecycle.renew with one log chunk (the runner's heartbeat + log append)
      finish = lifecycle.finish (the runner's fenced commit of the final status)
    on a fresh SQLite file and on a throwaway PostgreSQL started like the test suite does
    (tests/pgserver.py), when PostgreSQL is installed. p50/p95/p99 per query and backend; the
    latency includes waiting for a pooled connection, as it does in the API and runners.
(c) Sandbox start: --starts (default 12) concurrent starts of `python3 -c pass` in the runner's
    bubblewrap sandbox (benchmarks/throughput.py's sandbox_run: same command line, env, limits, uid
    switch), time from Popen to exit; vs the same number of concurrent plain `python3 -c pass` (same
    interpreter, no sandbox), alternating for --rounds rounds. Median, p95 and the ratio.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _grid import command_line, describe, load_line, local_grid, median, pct  # noqa: E402

QUERIES = ("claim", "get", "renew", "finish")


# --------------------------------------------------------------------------- (b) database

def db_latency(url: str, threads: int, per_thread: int, tag: str = "c") -> dict:
    from sqlalchemy import insert, select

    from rgrid_service import lifecycle
    from rgrid_service.auth import create_key, tenant_for_key
    from rgrid_service.db.models import Execution, ExecutionAttempt
    from rgrid_core.states import ExecutionStatus
    from rgrid_service.db.session import engine_for, upgrade_schema

    upgrade_schema(url)
    engine = engine_for(url)
    key = create_key(engine, "bench", "benchmark tenant")
    ids = [f"ex-{tag}{t:03d}{j:04d}" for t in range(threads) for j in range(per_thread)]
    spec = [{"name": "noop.py", "kind": "file", "size": 5, "sha256": "0" * 64, "md5": "0" * 32}]
    with engine.begin() as conn:
        conn.execute(insert(Execution), [
            dict(id=i, tenant_id="bench", status=ExecutionStatus.QUEUED, script="noop.py", args=[], env={}, runtime="python:3.11",
                 timeout_seconds=3600, inputs=spec, max_attempts=3) for i in ids
        ])
    lat: dict[str, list[float]] = {q: [] for q in QUERIES}
    waits: dict[str, list[float]] = {q: [] for q in QUERIES}
    errors: list[str] = []
    # Instrumentation only: how much of each query's time was spent getting a pooled connection
    # (queueing for one, or opening an overflow connection).
    tl = threading.local()
    original_get = engine.pool._do_get

    def timed_get():
        t0 = time.perf_counter()
        try:
            return original_get()
        finally:
            tl.wait = getattr(tl, "wait", 0.0) + time.perf_counter() - t0

    engine.pool._do_get = timed_get
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def run(t: int) -> None:
        mine: dict[str, list[float]] = {q: [] for q in QUERIES}
        mine_wait: dict[str, list[float]] = {q: [] for q in QUERIES}

        def timed(q: str, t0: float) -> None:
            mine[q].append(time.perf_counter() - t0)
            mine_wait[q].append(tl.wait)
            tl.wait = 0.0

        worker = f"w-{t % 8}"
        try:
            barrier.wait()
            tl.wait = 0.0
            for j in range(per_thread):
                ex_id = ids[t * per_thread + j]
                t0 = time.perf_counter()
                lease, _spec = lifecycle.claim_run(engine, ex_id, worker)
                timed("claim", t0)
                assert lease is not None, f"claim of {ex_id} lost"

                t0 = time.perf_counter()
                tenant = tenant_for_key(engine, key)
                with engine.connect() as conn:
                    conn.execute(select(Execution).where(Execution.id == ex_id, Execution.tenant_id == tenant)).one()
                    conn.execute(select(ExecutionAttempt.__table__).where(ExecutionAttempt.execution_id == ex_id)
                                 .order_by(ExecutionAttempt.attempt)).all()
                timed("get", t0)

                t0 = time.perf_counter()
                assert lifecycle.renew(engine, lease, [("stdout", b"x" * 100)])
                timed("renew", t0)

                t0 = time.perf_counter()
                assert lifecycle.finish(engine, lease, ExecutionStatus.SUCCEEDED, 0, None, [])
                timed("finish", t0)
        except Exception as e:  # noqa: BLE001 - reported with the figures
            with lock:
                errors.append(f"{type(e).__name__}: {e}"[:300])
        with lock:
            for q in QUERIES:
                lat[q].extend(mine[q])
                waits[q].extend(mine_wait[q])

    # A running API or runner has its pool's resident connections open already: open them first
    # (overflow connections beyond the pool size are opened and closed on demand, as in production).
    resident = [engine.connect() for _ in range(min(threads, getattr(engine.pool, "size", lambda: 1)()))]
    for c in resident:
        c.close()
    t0 = time.monotonic()
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.monotonic() - t0
    engine.pool._do_get = original_get
    p = engine.pool
    pool_desc = f"{type(p).__name__}" + (f"(size {p.size()}, overflow {p._max_overflow})" if hasattr(p, "size") else "")
    total = sum(len(v) for v in lat.values())
    return {"lat": lat, "waits": waits, "errors": errors, "wall": wall, "ops_per_s": total / wall, "pool": pool_desc}


def print_db(name: str, r: dict, threads: int, base: dict) -> None:
    print(f"  {name}: {threads} threads, {sum(len(v) for v in r['lat'].values())} queries in {r['wall']:.1f} s "
          f"({r['ops_per_s']:.0f}/s; 1 thread alone: {base['ops_per_s']:.0f}/s), engine pool {r['pool']}")
    print(f"    {'query':8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  p99 w/o pool wait  (ms) | 1 thread alone: "
          f"p50{'':>3}p99 | p50 ratio")
    for q in QUERIES:
        xs = [x * 1000 for x in r["lat"][q]]
        bs = [x * 1000 for x in base["lat"][q]]
        net = [(x - w) * 1000 for x, w in zip(r["lat"][q], r["waits"][q])]
        if xs and bs:
            print(f"    {q:8}{pct(xs, 50):>9.1f}{pct(xs, 95):>9.1f}{pct(xs, 99):>9.1f}{max(xs):>9.1f}{pct(net, 99):>19.1f}"
                  f"       | {pct(bs, 50):>18.1f}{pct(bs, 99):>6.1f} | {pct(xs, 50) / pct(bs, 50):>7.1f}x")
    ws = [x * 1000 for q in QUERIES for x in r["waits"][q]]
    if ws:
        print(f"    of which waiting for a pooled connection (all queries): p50 {pct(ws, 50):.1f}  p95 {pct(ws, 95):.1f}"
              f"  p99 {pct(ws, 99):.1f}  max {max(ws):.1f} ms")
    for e in (r["errors"] + base["errors"])[:1]:
        print(f"    ERRORS in {len(r['errors']) + len(base['errors'])} thread(s), e.g. {e}")


def db_pair(url: str, threads: int, per_thread: int) -> tuple[dict, dict]:
    """The uncontended baseline (1 thread, 50 executions) then the contended run, same database."""
    base = db_latency(url, 1, 50, tag="s")
    return db_latency(url, threads, per_thread, tag="c"), base


def sqlite_read_behind_write(hold: float = 1.0) -> float:
    """How long a plain read (engine.connect() + SELECT, as the API's GETs do) waits while another
    connection holds a write transaction open for `hold` seconds, with the product's SQLite engine.
    ~0 would mean WAL's concurrent readers work; ~hold means reads queue behind writes."""
    from sqlalchemy import text

    from rgrid_service.db.session import make_engine

    with tempfile.TemporaryDirectory(prefix="rgb-lock-") as d:
        engine = make_engine(f"sqlite:///{d}/lock.db")
        with engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        held, release = threading.Event(), threading.Event()

        def writer() -> None:
            with engine.begin() as c:
                c.exec_driver_sql("INSERT INTO t VALUES (1)")
                held.set()
                release.wait()

        th = threading.Thread(target=writer)
        th.start()
        held.wait()
        timer = threading.Timer(hold, release.set)
        t0 = time.monotonic()
        timer.start()
        with engine.connect() as c:
            c.execute(text("SELECT count(*) FROM t")).scalar()
        waited = time.monotonic() - t0
        th.join()
        engine.dispose()
    return waited


def postgres_latency(threads: int, per_thread: int) -> tuple[dict, dict] | None:
    from tests import pgserver

    if pgserver._pg_bindir() is None:
        print("  PostgreSQL: not installed (no initdb); skipped. `apt-get install postgresql` to include it.")
        return None
    gen = pgserver.pg_server_fixture()
    server = next(gen)
    try:
        return db_pair(server.url(), threads, per_thread)
    finally:
        gen.close()  # pg_ctl stop + remove the cluster


# --------------------------------------------------------------------------- (c) sandbox start

def sandbox_starts(n: int, rounds: int) -> dict:
    from rgrid_runner.sandbox import resolve_interpreter, script_env
    from throughput import runner_limits, sandbox_run

    interpreter = resolve_interpreter("python:3.11")
    limits = runner_limits()
    root = Path(tempfile.mkdtemp(prefix="rgb-start-", dir="/tmp"))
    os.chmod(root, 0o755)
    env = script_env({})

    def plain(_i: int, out: dict) -> None:
        t0 = time.monotonic()
        proc = subprocess.Popen([interpreter, "-c", "pass"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.communicate()
        out["exit"] = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"plain python exited {proc.returncode}")

    def boxed(i: int, out: dict) -> None:
        sandbox_run(root, i, interpreter, limits, argv=("-c", ["pass"]), timings=out)

    def together(fn, base: int) -> tuple[list[float], float]:
        outs = [{} for _ in range(n)]
        barrier = threading.Barrier(n)
        errs: list[BaseException] = []

        def go(i: int) -> None:
            barrier.wait()
            try:
                fn(base + i, outs[i])
            except BaseException as e:  # noqa: BLE001
                errs.append(e)

        ths = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        if errs:
            raise errs[0]
        return [o["exit"] for o in outs], time.monotonic() - t0

    res = {"sandbox": [], "plain": [], "sandbox_batch": [], "plain_batch": []}
    try:
        together(boxed, 10_000)  # warm the page cache, unmeasured
        together(plain, 0)
        for r in range(rounds):
            xs, wall = together(boxed, r * n)
            res["sandbox"] += xs
            res["sandbox_batch"].append(wall)
            xs, wall = together(plain, 0)
            res["plain"] += xs
            res["plain_batch"].append(wall)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput-n", type=int, default=100, help="executions for (a) (default 100)")
    ap.add_argument("--threads", type=int, default=64, help="concurrent DB threads for (b) (default 64)")
    ap.add_argument("--per-thread", type=int, default=20, help="executions per DB thread (default 20)")
    ap.add_argument("--starts", type=int, default=12, help="concurrent sandbox starts for (c) (default 12)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of concurrent starts (default 5)")
    ap.add_argument("--skip-grid", action="store_true", help="skip (a)")
    ap.add_argument("--skip-pg", action="store_true", help="SQLite only in (b)")
    opts = ap.parse_args()

    print("baselines")
    print(load_line() + "  [before]", flush=True)

    # (c) first: it is the shortest and most sensitive to other load.
    print(f"\n(c) sandbox start: {opts.starts} concurrent starts of `python3 -c pass`, {opts.rounds} rounds, "
          "sandboxed (runner's bwrap command line) vs plain", flush=True)
    print("  " + load_line())
    s = sandbox_starts(opts.starts, opts.rounds)
    for name in ("sandbox", "plain"):
        xs = s[name]
        print(f"  {name:8} median {median(xs) * 1000:6.1f} ms  p95 {pct(xs, 95) * 1000:6.1f} ms  max {max(xs) * 1000:6.1f} ms"
              f"   (all {opts.starts} done in: median {median(s[name + '_batch']) * 1000:.0f} ms)")
    print(f"  ratio sandbox / plain (medians): {median(s['sandbox']) / median(s['plain']):.2f}   "
          f"p95: {pct(s['sandbox'], 95) / pct(s['plain'], 95):.2f}")

    print(f"\n(b) database latency: {opts.threads} concurrent threads x {opts.per_thread} executions, "
          "claim/get/renew/finish each", flush=True)
    print("  " + load_line())
    with tempfile.TemporaryDirectory(prefix="rgb-db-") as d:
        r, base = db_pair(f"sqlite:///{d}/bench.db", opts.threads, opts.per_thread)
        print_db("SQLite", r, opts.threads, base)
    waited = sqlite_read_behind_write(1.0)
    print(f"  SQLite: a plain read (engine.connect() + SELECT) waited {waited:.2f} s while another connection held a "
          f"write transaction open for 1.00 s{' (reads queue behind writes)' if waited > 0.5 else ''}")
    if not opts.skip_pg:
        print("  " + load_line())
        pair = postgres_latency(opts.threads, opts.per_thread)
        if pair:
            print_db("PostgreSQL (tests/pgserver.py settings: fsync=off, synchronous_commit=off)", pair[0],
                     opts.threads, pair[1])

    if not opts.skip_grid:
        from throughput import print_rgrid, rgrid_throughput

        print(f"\n(a) single-node max throughput: {opts.throughput_n} no-op executions at once, 1 worker node (2 slots)",
              flush=True)
        with local_grid(workers=1) as g:
            print("  " + describe(g))
            print("  " + load_line(), flush=True)
            t = rgrid_throughput(g, opts.throughput_n)
            print_rgrid(t)
        print(f"  single-node max throughput: {t['per_min']:.0f} jobs/min")

    print("\n" + load_line() + "  [after]")
    print(f"\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()

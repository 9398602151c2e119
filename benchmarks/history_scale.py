"""History scale: the API's read latency and the idle grid's CPU with a long history stored.

    .venv/bin/python benchmarks/history_scale.py [--runs 1000000] [--db sqlite,postgresql]
                                                  [--requests 200] [--idle-seconds 60] [--workers 1]

For each database (SQLite: the local grid's own file; PostgreSQL: a throwaway cluster on
127.0.0.1, as tests/pgserver.py starts one) it starts a throwaway local grid on it, then:

1. stores a small history (--small runs, default 100) and measures;
2. tops the history up to --runs stored runs and measures again.

The history goes straight into the database in bulk (SQLAlchemy Core executemany through the
models, explicit `seq`), as a long-lived grid would hold it: 90 % succeeded, 10 % failed (exit
code 1), spread over a year; half of them the API key's tenant, the rest four others; a third in
batches of 500; one attempt row per run, and three log chunks for 5 % of the runs. Runs older than
the retention time have their files expired, and every run is priced, so the orchestrator's
retention and cost jobs find nothing to do, as on a grid that keeps up.

Measuring: every read endpoint --requests times in a row over one keep-alive connection (after 5
unmeasured), p50 and p99 of the client's time per request; a page after the first through the
list's cursor (X-Next-Cursor) when the API gives one. Then the idle CPU of each grid process
over --idle-seconds (after --settle seconds), read from /proc.

Steady state, not the load's aftermath: before measuring, the grid is brought to where one that
gathered this history over a year would be. The database (History.settle): on PostgreSQL a VACUUM
(ANALYZE) after the fill and a wait until no autovacuum worker runs; on SQLite a WAL checkpoint.
The orchestrator is restarted (restart_orchestrator): one that ran through the fill observes every
bulk-loaded run as new for minutes. Each measurement prints what that took, and the plan of each
list statement. Issue #13's goals: every read's
p99 <= 20 ms at 1,000,000 stored runs; the idle grid under 5 % of a core.
"""
from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grid import command_line, idle_cpu, load_line, local_grid, pct  # noqa: E402

OWN_TENANT = "local"  # the local grid's API key belongs to it (rgrid_service.localgrid.bootstrap)
OTHER_TENANTS = ("tenant-a", "tenant-b", "tenant-c", "tenant-d")
OWN_SHARE = 0.5
FAILED_SHARE = 0.10
BATCHED_SHARE = 1 / 3
BATCH_SIZE = 500
LOGGED_SHARE = 0.05
CHUNK = 20_000
SPAN = timedelta(days=365)
RETENTION = timedelta(days=7)
P99_GOAL_MS = 20.0
IDLE_GOAL_PERCENT = 5.0


class History:
    """Writes runs into the grid's database in bulk and remembers a sample of what it wrote (own
    run ids, ids with logs, batch ids) for the requests."""

    def __init__(self, engine, seed: int = 13):
        self.engine = engine
        self.rng = random.Random(seed)
        self.own_ids: list[str] = []
        self.logged_ids: list[str] = []
        self.batch_ids: list[str] = []
        self.stored = 0

    def ensure_tenants(self) -> None:
        from sqlalchemy import insert, select

        from rgrid_service.db.models import Tenant

        with self.engine.begin() as conn:
            have = set(conn.execute(select(Tenant.id)).scalars())
            missing = [{"id": t, "name": t} for t in OTHER_TENANTS if t not in have]
            if missing:
                conn.execute(insert(Tenant), missing)

    def add(self, n: int, newest: datetime, on_progress=lambda done: None) -> float:
        """Store n more runs, created over SPAN up to `newest`; returns the seconds it took."""
        from sqlalchemy import func, insert, select

        from rgrid_service.db.models import Execution, ExecutionAttempt, LogChunk

        self.ensure_tenants()
        t0 = time.monotonic()
        with self.engine.connect() as conn:
            seq = conn.execute(select(func.coalesce(func.max(Execution.seq), 0))).scalar_one()
        batch, batch_left, runs_tenant = None, 0, OWN_TENANT
        done = 0
        while done < n:
            size = min(CHUNK, n - done)
            runs, attempts, chunks = [], [], []
            for i in range(done, done + size):
                seq += 1
                created = newest - SPAN * (1 - i / n) if n > 1 else newest
                if batch_left == 0:  # a new batch, or one run on its own; the first ones are the key's tenant's
                    batch = ("b-" + secrets.token_hex(6)) if self.rng.random() < BATCHED_SHARE else None
                    batch_left = min(BATCH_SIZE, max(2, n // 10)) if batch else 1
                    runs_tenant = OWN_TENANT if i == 0 or self.rng.random() < OWN_SHARE \
                        else self.rng.choice(OTHER_TENANTS)
                    if batch and runs_tenant == OWN_TENANT and len(self.batch_ids) < 200:
                        self.batch_ids.append(batch)
                batch_left -= 1
                failed = self.rng.random() < FAILED_SHARE
                ex_id = "ex-" + secrets.token_hex(6)
                started = created + timedelta(seconds=1)
                finished = started + timedelta(seconds=self.rng.uniform(1, 120))
                expired = finished + RETENTION if finished + RETENTION < newest else None
                logged = i == 0 or self.rng.random() < LOGGED_SHARE
                runs.append(dict(
                    id=ex_id, tenant_id=runs_tenant, status="failed" if failed else "succeeded", script="job.py",
                    args=["--part", str(i)], env={}, env_sealed=None, env_keys=[], runtime="python:3.11",
                    timeout_seconds=3600, inputs=[], batch_id=batch, batch_parallel=None, attempt=1, max_attempts=3,
                    worker_id="w-1", exit_code=1 if failed else 0,
                    reason="The script exited with code 1." if failed else None,
                    log_bytes=600 if logged else 0, log_truncated=False, created_at=created, seq=seq,
                    queued_at=created, dispatched_at=created, dispatched_to="w-1", started_at=started,
                    finished_at=finished, heartbeat_at=finished, provisioning_at=None,
                    cost_eur=round((finished - started).total_seconds() * 2e-6, 8), files_expired_at=expired))
                attempts.append(dict(
                    execution_id=ex_id, attempt=1, worker_id="w-1", started_at=started, running_at=started,
                    uploading_at=finished, finished_at=finished, cost_eur=runs[-1]["cost_eur"],
                    outcome="failed" if failed else "succeeded", reason=runs[-1]["reason"], running_on_worker=1))
                if logged:
                    chunks += [dict(execution_id=ex_id, attempt=1, stream=stream, data=b"x" * 199 + b"\n",
                                    created_at=finished) for stream in ("stdout", "stdout", "stderr")]
                if runs_tenant == OWN_TENANT:
                    if len(self.own_ids) < 2000 and self.rng.random() < 0.01 or len(self.own_ids) < 20:
                        self.own_ids.append(ex_id)
                    if logged and len(self.logged_ids) < 500:
                        self.logged_ids.append(ex_id)
            with self.engine.begin() as conn:
                conn.execute(insert(Execution), runs)
                conn.execute(insert(ExecutionAttempt), attempts)
                if chunks:
                    conn.execute(insert(LogChunk), chunks)
            done += size
            on_progress(done)
        self.stored += n
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            with self.engine.begin() as conn:  # the sequence follows the explicit seq values
                conn.execute(text("SELECT setval('executions_seq', (SELECT max(seq) FROM executions))"))
        return time.monotonic() - t0

    def settle(self, wait_limit: float = 600.0) -> str:
        """Bring the database to the state a grid that kept this history for a year is in, so that
        what is measured is the steady state and not the aftermath of loading a year in a minute.

        PostgreSQL: VACUUM (ANALYZE), what autovacuum did long ago on a grid whose history grew
        run by run (statistics, the visibility map that lets index-only scans skip the table,
        hint bits that the first reads of freshly loaded rows would otherwise write), then wait
        until no autovacuum worker runs. Without it, autovacuum's pass over the freshly loaded
        tables is what gets measured: PostgreSQL at 9 % of a core and p99s near 24 ms. SQLite:
        a WAL checkpoint (SQLite checkpoints every 1000 pages on its own; the last pages of the
        load would otherwise be checkpointed during the measurement); no ANALYZE, which the
        product never runs. Returns a line saying what it did and how long it took."""
        from sqlalchemy import text

        t0 = time.monotonic()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.engine.dialect.name != "postgresql":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                return f"WAL checkpoint {time.monotonic() - t0:.0f} s"
            conn.execute(text("VACUUM (ANALYZE)"))
            vacuumed = time.monotonic() - t0
            t1 = time.monotonic()
            while time.monotonic() - t1 < wait_limit:
                busy = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")).scalar_one()
                if not busy:
                    return f"VACUUM (ANALYZE) {vacuumed:.0f} s, then no autovacuum worker after {time.monotonic() - t1:.0f} s"
                time.sleep(1)
        return (f"VACUUM (ANALYZE) {vacuumed:.0f} s; autovacuum still running after {wait_limit:.0f} s "
                "(measured anyway: the figures include it)")

    def plans(self) -> list[str]:
        """The plan and the database's own time of each list statement the API runs, as the
        benchmark asks it (the key's tenant, no cursor): PostgreSQL's EXPLAIN ANALYZE, SQLite's
        EXPLAIN QUERY PLAN."""
        from rgrid_service.api import queries

        shapes = {"all": (None, None), "status=failed": ("failed", None)}
        if self.batch_ids:
            shapes["batch"] = (None, self.batch_ids[0])
        lines = []
        with self.engine.connect() as conn:
            for name, (status, batch) in shapes.items():
                statement = queries.list_statement(OWN_TENANT, status, batch, 21)
                sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
                if conn.dialect.name == "postgresql":
                    plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).all()]
                    steps = [p.strip().split("  (")[0] for p in plan if "Scan" in p or "Limit" in p or "Sort" in p]
                    took = [p.strip() for p in plan if p.startswith(("Planning Time", "Execution Time"))]
                    lines.append(f"    list {name:14s} {' / '.join(steps)}; {', '.join(took)}")
                else:
                    steps = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()]
                    lines.append(f"    list {name:14s} {' / '.join(steps)}")
        return lines


def endpoints(history: History, api) -> dict[str, callable]:
    """Endpoint name -> a function giving the next path to request."""
    rng = random.Random(7)
    paths = {
        "GET /v1/executions?limit=20": lambda: "/v1/executions?limit=20",
        "GET /v1/executions?status=failed&limit=20": lambda: "/v1/executions?status=failed&limit=20",
    }
    for name, first in list(paths.items()):
        cursor = api.get(first()).headers.get("x-next-cursor")
        if cursor:
            paths[name.replace("limit=20", "limit=20&cursor=<next page>")] = \
                (lambda p, c: lambda: f"{p}&cursor={c}")(first(), cursor)
    if history.batch_ids:
        paths["GET /v1/executions?batch=<id>&limit=20"] = \
            lambda: f"/v1/executions?batch={rng.choice(history.batch_ids)}&limit=20"
        paths["GET /v1/batches/<id>"] = lambda: f"/v1/batches/{rng.choice(history.batch_ids)}"
    paths["GET /v1/executions/<id>"] = lambda: f"/v1/executions/{rng.choice(history.own_ids)}"
    if history.logged_ids:
        paths["GET /v1/executions/<id>/logs"] = lambda: f"/v1/executions/{rng.choice(history.logged_ids)}/logs"
    paths.update({
        "GET /v1/workers": lambda: "/v1/workers",
        "GET /v1/fleet/history": lambda: "/v1/fleet/history",
        "GET /v1/fleet/costs": lambda: "/v1/fleet/costs",
        "GET /v1/cluster": lambda: "/v1/cluster",
    })
    return paths


def measure(api, paths: dict, requests: int) -> dict[str, tuple[float, float]]:
    """Endpoint name -> (p50, p99) in ms over `requests` requests in a row (5 unmeasured first)."""
    figures = {}
    for name, next_path in paths.items():
        times = []
        for i in range(requests + 5):
            path = next_path()
            t0 = time.perf_counter()
            r = api.get(path)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:300]}")
            if i >= 5:
                times.append(elapsed * 1000)
        figures[name] = (pct(times, 50), pct(times, 99))
    return figures


@contextmanager
def database(kind: str):
    """(URL, folder of its server's processes): (None, None) for the local grid's own SQLite; a
    throwaway PostgreSQL cluster's, stopped after (its processes count as the grid's)."""
    if kind == "sqlite":
        yield None, None
        return
    from tests.pgserver import start_cluster, stop_cluster

    pg = start_cluster()
    try:
        yield pg.url(), pg.base
    finally:
        stop_cluster(pg)


def restart_orchestrator(g, limit: float = 120.0) -> str:
    """Stop the grid's orchestrator and start it again, as `rgrid local` restarts a component; back
    once its metrics answer. The orchestrator's run observer (orchestrator/metrics.py) counts the
    runs that got an attempt or ended after it started: one that ran through the fill takes every
    bulk-loaded run for a new one and observes them all, 5000 per 2 s tick (about 7 minutes for
    1,000,000), which a grid whose history grew over a year never does. Returns a line saying so."""
    from rgrid_service.localgrid.grid import service_env_for, start_orchestrator
    from rgrid_service.localgrid.procs import stop_groups

    import httpx

    t0 = time.monotonic()
    stop_groups([g.state.pids["orchestrator"]], grace=8)
    start_orchestrator(g.state, service_env_for(g.state))
    while time.monotonic() - t0 < limit:
        try:
            if httpx.get(g.state.orchestrator_metrics_url, timeout=1, trust_env=False).status_code == 200:
                return f"orchestrator restarted (its metrics answer after {time.monotonic() - t0:.0f} s)"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the restarted orchestrator's metrics did not answer within {limit:.0f} s; "
                       f"see the orchestrator.log under {g.home}")


def run_one(kind: str, opts) -> dict:
    from rgrid_service.db.session import engine_for

    print(f"\n== {kind} ==", flush=True)
    result = {}
    with database(kind) as (url, server_dir), local_grid(workers=opts.workers, database_url=url) as g:
        engine = engine_for(g.state.database_url)
        history = History(engine)
        newest = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=5)
        for label, target in (("small", opts.small), ("large", opts.runs)):
            step = max(CHUNK, (target - history.stored) // 10)

            def progress(done, base=history.stored, total=target):
                if done % step < CHUNK or base + done == total:
                    print(f"  {kind}: {base + done:,} of {total:,} runs stored", flush=True)

            took = history.add(target - history.stored, newest, progress)
            print(f"  {kind}: {history.stored:,} runs stored ({took:.0f} s for this part)", flush=True)
            settled = history.settle()
            print(f"  {kind}: settled: {settled}", flush=True)
            print(f"  {kind}: {restart_orchestrator(g)}", flush=True)
            plans = history.plans()
            print("\n".join(plans), flush=True)
            with g.api() as api:
                figures = measure(api, endpoints(history, api), opts.requests)
            time.sleep(opts.settle)
            idle, wall = idle_cpu(g.home, opts.idle_seconds, extra=(server_dir,) if server_dir else ())
            result[label] = {"stored": history.stored, "latency": figures, "idle": idle, "fill_seconds": took,
                             "settled": settled, "plans": plans}
            print(f"  {kind}: measured with {history.stored:,} runs stored; idle {sum(idle.values()):.1f} % "
                  f"of a core over {wall:.0f} s  ({load_line()})", flush=True)
    return result


def report(kind: str, result: dict) -> list[str]:
    small, large = result["small"], result["large"]
    head = f"{small['stored']:,} runs"
    tail = f"{large['stored']:,} runs"
    lines = [f"\n{kind}: API read latency, ms (client time per request, keep-alive)",
             f"    {'endpoint':52s} {head + ' p50':>14s} {'p99':>7s}   {tail + ' p50':>18s} {'p99':>7s}"]
    worst = 0.0
    for name in large["latency"]:
        s50, s99 = small["latency"].get(name, (float("nan"), float("nan")))
        l50, l99 = large["latency"][name]
        worst = max(worst, l99)
        lines.append(f"    {name:52s} {s50:14.1f} {s99:7.1f}   {l50:18.1f} {l99:7.1f}")
    lines.append(f"  goal p99 <= {P99_GOAL_MS:.0f} ms at {large['stored']:,}: "
                 f"{'met' if worst <= P99_GOAL_MS else 'NOT met'} (worst p99 {worst:.1f} ms)")
    lines.append(f"{kind}: idle CPU per grid process, % of one core")
    roles = sorted(set(small["idle"]) | set(large["idle"]), key=lambda r: -large["idle"].get(r, 0))
    for role in roles:
        a, b = small["idle"].get(role, 0.0), large["idle"].get(role, 0.0)
        if a >= 0.05 or b >= 0.05:
            lines.append(f"    {role:52s} {a:14.1f} {'':7s}   {b:18.1f}")
    ta, tb = sum(small["idle"].values()), sum(large["idle"].values())
    lines.append(f"    {'total':52s} {ta:14.1f} {'':7s}   {tb:18.1f}")
    lines.append(f"  goal idle grid < {IDLE_GOAL_PERCENT:.0f} % of a core: {'met' if tb < IDLE_GOAL_PERCENT else 'NOT met'}"
                 f" ({tb:.1f} % with {large['stored']:,} runs)")
    lines.append(f"  fill: {large['stored'] - small['stored']:,} runs in {large['fill_seconds']:.0f} s; "
                 f"settled after it: {large['settled']}")
    lines.append(f"  plans with {large['stored']:,} runs:")
    lines += large["plans"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1_000_000, help="stored runs for the large measurement (default 1,000,000)")
    ap.add_argument("--small", type=int, default=100, help="stored runs for the small measurement (default 100)")
    ap.add_argument("--db", default="sqlite,postgresql", help="databases, comma-separated (default sqlite,postgresql)")
    ap.add_argument("--requests", type=int, default=200, help="measured requests per endpoint (default 200)")
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU sampling time (default 60)")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds between the requests and the idle sample (default 15)")
    ap.add_argument("--workers", type=int, default=1, help="worker nodes of the grid (default 1)")
    opts = ap.parse_args()
    if opts.runs <= opts.small:
        raise SystemExit(f"--runs ({opts.runs}) must be more than --small ({opts.small}).")
    kinds = [k.strip() for k in opts.db.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ("sqlite", "postgresql")]
    if unknown:
        raise SystemExit(f"--db takes sqlite and/or postgresql, not {', '.join(unknown)}.")

    print("history scale: API read latency and idle CPU, small history vs long history")
    print(load_line() + "  [before]", flush=True)
    lines = []
    for kind in kinds:
        lines += report(kind, run_one(kind, opts))
    print(load_line() + "  [after]")
    print("\n".join(lines))
    print(f"\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()

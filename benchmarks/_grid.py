"""Shared helpers for the benchmarks: a throwaway local grid, API submission, load average.

Not a benchmark itself. `local_grid()` starts a real local grid (SeaweedFS, Ray head, N worker
nodes, API, orchestrator) in a fresh home under /tmp and stops it afterwards; it never touches a
grid somebody else started (their RGRID_* variables are hidden from ours).

Timings are the product defaults unless `fast=True` (the test suite's values) or explicit
RGRID_* overrides are given; `BenchGrid.timings` says which values the grid really ran with.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from rgrid_core.states import TERMINAL  # noqa: E402

NOOP = "pass\n"

# The test suite's timings (tests/conftest.py GRID_ENV), for --fast.
FAST_ENV = {
    "RGRID_DISPATCH_INTERVAL_SECONDS": "0.2",
    "RGRID_LOG_FLUSH_INTERVAL_SECONDS": "0.1",
    "RGRID_LEASE_CHECK_INTERVAL_SECONDS": "0.3",
}
# The knobs that matter for how fast a job goes through; reported with every figure.
TIMING_KNOBS = ("dispatch_interval_seconds", "dispatch_idle_interval_seconds", "dispatch_min_gap_seconds", "log_flush_interval_seconds",
                "lease_check_interval_seconds", "sweep_interval_seconds", "heartbeat_interval_seconds", "sandbox_memory_mb")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def load_line() -> str:
    one, five, fifteen = load_average()
    warn = "  <-- above 2 on this machine: other work is competing for the CPUs" if one > 2 else ""
    return f"load average (1/5/15 min): {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores{warn}"


def command_line() -> str:
    """How this benchmark was started, for the reproduce line every benchmark prints."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv[0] = os.path.relpath(argv[0], ROOT)
    py = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return f"cd {ROOT} && {py} {shlex.join(argv)}"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass
class BenchGrid:
    home: Path
    state: object
    timings: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)

    def store_client(self) -> httpx.Client:
        """For presigned URLs: no API key header (it would clash with the URL's signature)."""
        return httpx.Client(timeout=60, trust_env=False)

    def api(self) -> httpx.Client:
        # trust_env=False: no proxy variable can send this traffic anywhere but 127.0.0.1.
        return httpx.Client(base_url=self.state.api_url, timeout=60, trust_env=False,
                            headers={"Authorization": f"Bearer {self.state.api_key}"})

    def submit(self, api: httpx.Client, store: httpx.Client, script_text: str = NOOP, name: str = "noop.py",
               args: list[str] | None = None, **fields) -> str:
        """Queue an execution the way the CLI does (rgrid/cli.py submit): create asking to queue at
        once; only if the grid does not hold the script yet (by content), PUT it to its presigned
        URL and submit. Returns the execution id."""
        data = script_text.encode()
        spec = {"name": name, "kind": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "md5": hashlib.md5(data).hexdigest()}
        created = api.post("/v1/executions", json={"script": name, "args": args or [], "inputs": [spec],
                                                   "submit": True, **fields})
        if created.status_code != 201:
            raise RuntimeError(f"create failed: {created.status_code} {created.text}")
        body = created.json()
        if body["status"] == "queued":
            return body["id"]
        for upload in body["uploads"]:
            put = store.put(upload["url"], content=data)
            if put.status_code != 200:
                raise RuntimeError(f"upload failed: {put.status_code} {put.text[:300]}")
        submitted = api.post(f"/v1/executions/{body['id']}/submit")
        if submitted.status_code != 200:
            raise RuntimeError(f"submit failed: {submitted.status_code} {submitted.text}")
        return body["id"]

    def submit_batch(self, api: httpx.Client, store: httpx.Client, scripts: list[str], batch_id: str,
                     name: str = "noop.py", pool=None) -> list[str]:
        """Queue one execution per script text as `rgrid run --batch` does (rgrid/cli.py
        submit_batch): one bulk create per 500 asking to queue at once; only the executions whose
        script the grid does not hold yet get a PUT and a submit (from `pool`'s threads if given)."""
        def spec(text: str) -> dict:
            data = text.encode()
            return {"name": name, "kind": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "md5": hashlib.md5(data).hexdigest()}

        ids: list[str] = []
        todo = []
        for start in range(0, len(scripts), 500):
            chunk = scripts[start:start + 500]
            r = api.post("/v1/executions/bulk", json={"executions": [
                {"script": name, "inputs": [spec(t)], "batch_id": batch_id, "submit": True} for t in chunk]})
            if r.status_code != 201:
                raise RuntimeError(f"bulk create failed: {r.status_code} {r.text[:300]}")
            for text, one in zip(chunk, r.json()["created"]):
                ids.append(one["id"])
                if one["status"] != "queued":
                    todo.append((text, one))

        def finish(item) -> None:
            text, one = item
            for upload in one["uploads"]:
                put = store.put(upload["url"], content=text.encode())
                if put.status_code != 200:
                    raise RuntimeError(f"upload failed: {put.status_code} {put.text[:300]}")
            submitted = api.post(f"/v1/executions/{one['id']}/submit")
            if submitted.status_code != 200:
                raise RuntimeError(f"submit failed: {submitted.status_code} {submitted.text}")

        list(pool.map(finish, todo) if pool else map(finish, todo))
        return ids

    def wait_one(self, api: httpx.Client, ex_id: str, poll: float = 0.05, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            ex = api.get(f"/v1/executions/{ex_id}").json()
            if ex["status"] in TERMINAL:
                return ex
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ex_id} still {ex['status']} after {timeout:.0f} s")
            time.sleep(poll)

    def wait_all(self, ids: list[str], poll: float = 0.5, timeout: float = 600) -> dict[str, dict]:
        """Poll the list endpoint (one request per poll, not one per execution, so the waiting
        adds little load) until every id is terminal. Returns id -> execution view."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while True:
                rows = api.get("/v1/executions", params={"limit": 1000}).json()
                done = {r["id"]: r for r in rows if r["id"] in wanted and r["status"] in TERMINAL}
                if len(done) == len(wanted):
                    return done
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(wanted) - len(done)} of {len(wanted)} executions did not finish "
                                       f"within {timeout:.0f} s")
                time.sleep(poll)

    def wait_batch(self, batch_id: str, n: int, poll: float = 0.5, timeout: float = 600) -> dict[str, dict]:
        """Poll the batch's per-status counts (one small query per poll, as `rgrid run --batch`
        does) until all n executions ended; then list them once. Returns id -> execution view."""
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while True:
                view = api.get(f"/v1/batches/{batch_id}").json()
                if view.get("finished") and view.get("total") == n:
                    rows = api.get("/v1/executions", params={"batch": batch_id, "limit": 1000}).json()
                    return {r["id"]: r for r in rows}
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch {batch_id} did not finish within {timeout:.0f} s: {view}")
                time.sleep(poll)

    def log(self, name: str) -> Path:
        return self.home / "local" / "logs" / f"{name}.log"


def utc(ts: str | None) -> float | None:
    """An API timestamp (naive UTC, the database clock) as a Unix time."""
    if not ts:
        return None
    return datetime.fromisoformat(ts).replace(tzinfo=timezone.utc).timestamp()


@contextmanager
def local_grid(workers: int = 1, fast: bool = False, env: dict[str, str] | None = None, keep: bool = False,
               ray_jobs: bool = False, database_url: str | None = None):
    """Start a throwaway local grid; yields a BenchGrid; stops and removes it afterwards.

    database_url: a database instead of the grid's own SQLite file (e.g. a throwaway PostgreSQL).

    ray_jobs: make Ray's own Jobs API usable on it: pin the dashboard agent to loopback (see
    benchmarks/_rayshim/sitecustomize.py); without it a job submission hangs."""
    if not shutil.which("bwrap"):
        raise SystemExit("bubblewrap (bwrap) is not installed: `apt-get install bubblewrap`.")
    from rgrid_core.constants import SLOTS_PER_WORKER
    from rgrid_service.localgrid import grid as localgrid
    from rgrid_service.localgrid.layout import work_root
    from rgrid_service.settings import ServiceSettings

    # A SIGTERM (e.g. from `timeout`) must still stop the grid: turn it into an exception.
    def _term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)

    # Scripts run in bubblewrap, as for every figure so far, unless a benchmark asks for Docker.
    overrides = {"RGRID_LOCAL_DOCKER": "0", **(FAST_ENV if fast else {}), **(env or {})}
    saved = dict(os.environ)
    # Hide any RGRID_* of a grid somebody else runs (e.g. a dev grid's RGRID_HOME): the grid
    # processes inherit os.environ at up(), and must see only our knobs.
    for k in [k for k in os.environ if k.startswith("RGRID_")]:
        del os.environ[k]
    os.environ.update(overrides)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    if ray_jobs:  # Ray Jobs goes through the dashboard, which the grid starts only when asked
        os.environ["RGRID_RAY_DASHBOARD"] = "1"
        shim = str(Path(__file__).resolve().parent / "_rayshim")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p)
        os.environ["RGB_PIN_AGENT_LOOPBACK"] = "1"
    settings = ServiceSettings()
    timings = {k: getattr(settings, k) for k in TIMING_KNOBS}
    # Ray's socket paths must stay short: the grid home sits directly under /tmp.
    home = Path(tempfile.mkdtemp(prefix="rgb-", dir="/tmp"))
    started = time.monotonic()
    try:
        try:
            state = localgrid.up(home, workers=workers, database_url=database_url,
                                 on_step=lambda m: print(f"  grid: starting {m}", flush=True))
        except Exception:
            for log in sorted((home / "local" / "logs").glob("*.log")):
                print(f"---- {log}\n{log.read_text(errors='replace')[-2000:]}")
            raise
        finally:
            os.environ.clear()
            os.environ.update(saved)
            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        print(f"  grid: up in {time.monotonic() - started:.1f} s at {home} ({workers} worker node(s), "
              f"{workers * SLOTS_PER_WORKER} slots)", flush=True)
        if ray_jobs:  # Ray's Jobs API client (the dashboard) authenticates with the grid's Ray token
            from rgrid_service.localgrid.layout import ray_token_file
            from rgrid_service.raynet import use_token

            use_token(ray_token_file(home))
        grid = BenchGrid(home, state, timings, overrides)
        _wait_ready(grid, workers)
        yield grid
    finally:
        localgrid.down(home)
        if not keep:
            shutil.rmtree(work_root(home), ignore_errors=True)
            for _ in range(5):  # a Ray process still exiting may write a last log file
                shutil.rmtree(home, ignore_errors=True)
                if not home.exists():
                    break
                time.sleep(1)


def _wait_ready(grid: BenchGrid, workers: int, timeout: float = 120) -> None:
    """Until every worker agent has registered: a job submitted before that would only wait."""
    from sqlalchemy import func, select

    from rgrid_service.db.models import Worker
    from rgrid_service.db.session import engine_for

    engine = engine_for(grid.state.database_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).where(Worker.state == "active")).scalar_one()
        if n >= workers:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {n} of {workers} worker agents registered within {timeout:.0f} s")


def describe(grid: BenchGrid) -> str:
    t = grid.timings
    src = ("product defaults" if not grid.overrides else
           "overridden: " + ", ".join(f"{k}={v}" for k, v in grid.overrides.items()))
    return ("timings: " + ", ".join(f"{k}={v}" for k, v in t.items()) + f"  [{src}]")


def _role(pid: int, cmdline: str, me: int) -> str:
    """A short name for what a process is, to add up CPU seconds per part of the grid."""
    if pid == me:
        return "benchmark client"
    if pid == 1:  # init reaps what outlives its parent: each sandbox's script (bwrap's pid namespace)
        return "init (reaped orphans: sandboxed scripts)"
    rules = (("weed", "object store (SeaweedFS)"), ("postgres", "PostgreSQL"), ("uvicorn", "API"), ("rgrid_service.api", "API"),
             ("orchestrator", "orchestrator"), ("rgrid_runner.agent", "worker agent"),
             ("ray::Runner", "runner (Ray worker incl. sandboxes)"),
             ("ray::IDLE", "Ray idle worker processes"), ("raylet", "raylet"), ("gcs_server", "Ray GCS"),
             ("raynet start", "ray start --block (per node)"),
             ("dashboard/agent", "Ray dashboard agent"), ("runtime_env/agent", "Ray runtime-env agent"),
             ("ray::DashboardAgent", "Ray dashboard agent"), ("ray::RuntimeEnvAgent", "Ray runtime-env agent"),
             ("dashboard", "Ray dashboard"), ("log_monitor", "Ray log monitor"), ("monitor.py", "Ray monitor"),
             ("rgrid_runner.node", "worker node command"), ("ray/", "Ray other"), ("bwrap", "sandbox"))
    for needle, role in rules:
        if needle in cmdline:
            return role
    words = cmdline.split()
    if not words:  # a process that ended between the two reads of /proc (a zombie has no command line)
        return "other: (ended)"
    return "other: " + " ".join([os.path.basename(words[0]), *words[1:3]])[:60]


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds (user+sys, including waited-for children such as sandboxes) per role, for every
    process now alive. Take one before and one after a phase and subtract."""
    from rgrid_service.localgrid.procs import proc_stats

    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    totals: dict[str, float] = {}
    for pid, fields in proc_stats():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if not cmd:
            continue  # kernel threads
        secs = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
        role = _role(pid, cmd, me)
        totals[role] = totals.get(role, 0.0) + secs
    return totals


def _grid_marks(home: Path, extra: tuple[Path, ...] = ()) -> tuple[bytes, ...]:
    """Paths only the grid at `home` uses: its home, Ray's temp dir, the workers' work root, and
    `extra` (e.g. the data folder of a PostgreSQL it runs on)."""
    from rgrid_service.localgrid.layout import ray_temp_dir, work_root

    return tuple(str(p).encode() for p in (home, ray_temp_dir(home), work_root(home), *extra))


def _marked(pid: int, marks: tuple[bytes, ...]) -> bool:
    """Whether one of the grid's paths is in the process's command line (SeaweedFS, Ray's
    --temp-dir) or environment (what the grid and its workers start). A process that retitled
    itself (setproctitle: Ray's agents, the dashboard's modules) may have lost both: its parent has them."""
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                text = f.read()
        except OSError:
            return False
        if any(m in text for m in marks):
            return True
    return False


def grid_processes(home: Path, extra: tuple[Path, ...] = ()) -> dict[int, tuple[str, str, float]]:
    """pid -> (role, command line, CPU seconds: user+sys, waited-for children included) for the
    processes of the grid at `home` only (not other grids or tests on the same machine), and those
    naming one of the `extra` paths, with their children."""
    from rgrid_service.localgrid.procs import proc_stats

    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    marks = _grid_marks(home, extra)
    stats = dict(proc_stats())
    verdict: dict[int, bool] = {}

    def belongs(pid: int) -> bool:  # it, or an ancestor below init, carries one of the marks
        if pid not in verdict:
            parent = int(stats[pid][1]) if pid in stats else 0
            verdict[pid] = _marked(pid, marks) or (parent > 1 and belongs(parent))
        return verdict[pid]

    found = {}
    for pid, fields in stats.items():
        if pid == me or not belongs(pid):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found[pid] = (_role(pid, cmd, me), cmd, sum(int(v) for v in fields[11:15]) / tick)
    return found


def idle_cpu(home: Path, seconds: float, per_process: list | None = None,
             extra: tuple[Path, ...] = ()) -> tuple[dict[str, float], float]:
    """Percent of one core each role of the grid at `home` (and of the processes naming an `extra`
    path) used over `seconds` of sampling, and the wall time it really took. per_process, if given,
    gets (percent, role, command) per process."""
    before, t0 = grid_processes(home, extra), time.monotonic()
    time.sleep(seconds)
    after, wall = grid_processes(home, extra), time.monotonic() - t0
    percent: dict[str, float] = {}
    for pid, (role, cmd, secs) in after.items():
        used = 100 * max(0.0, secs - (before[pid][2] if pid in before else 0.0)) / wall
        percent[role] = percent.get(role, 0.0) + used
        if per_process is not None:
            per_process.append((used, role, cmd))
    return percent, wall


def idle_report(percent: dict[str, float], wall: float) -> str:
    """idle_cpu()'s figures as lines, largest first, with the total."""
    lines = [f"idle CPU of the grid's processes over {wall:.0f} s (% of one core):"]
    for role, p in sorted(percent.items(), key=lambda kv: -kv[1]):
        if p >= 0.05:
            lines.append(f"    {role:40s} {p:5.1f} %")
    lines.append(f"    {'total':40s} {sum(percent.values()):5.1f} %")
    return "\n".join(lines)


def cpu_report(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    roles = sorted(set(before) | set(after), key=lambda r: -(after.get(r, 0) - before.get(r, 0)))
    lines = [f"CPU seconds during the phase ({wall:.1f} s wall, {os.cpu_count()} cores = "
             f"{wall * (os.cpu_count() or 1):.1f} CPU-s available):"]
    for r in roles:
        d = after.get(r, 0) - before.get(r, 0)
        if d >= 0.05:
            lines.append(f"    {r:40s} {d:6.2f} s")
    return "\n".join(lines)

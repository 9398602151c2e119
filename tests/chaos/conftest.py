"""The chaos grid: the real local grid (SeaweedFS, a Ray head and 3 Ray worker nodes, the API and the
orchestrator loop) on the session's real PostgreSQL, at test-speed timings, for the fault scenarios.

It is started once for the scenarios and survives every fault the scenarios inject: killed worker
nodes are replaced by the local fleet provider, PostgreSQL and the object store come back on the
same ports, a killed orchestrator is started again. `wait_for_workers` brings it back to three live
workers before each scenario.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from sqlalchemy import select

from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid
from rgrid_service.localgrid.procs import group_alive, process_table
from tests.pgserver import PgServer, _run_as_owner

WORKERS = 3
HEARTBEAT = 1.0
DEAD_AFTER = 5.0
SWEEP = 1.0

# Inherited by every grid process (set in os.environ only while localgrid.up spawns them).
CHAOS_ENV = {
    **GRID_ENV,
    "RGRID_HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT),
    "RGRID_DEAD_AFTER_SECONDS": str(DEAD_AFTER),
    "RGRID_SWEEP_INTERVAL_SECONDS": str(SWEEP),
    "RGRID_DISPATCH_INTERVAL_SECONDS": "0.2",
    "RGRID_REDISPATCH_AFTER_SECONDS": "10",
    "RGRID_LEASE_CHECK_INTERVAL_SECONDS": "0.3",
    "RGRID_LOG_FLUSH_INTERVAL_SECONDS": "0.1",
    "RGRID_PROVISION_INTERVAL_SECONDS": "1",
    "RGRID_BOOT_TIMEOUT_SECONDS": "120",
    # dead_after is compressed to 5 s here, below the API's own restart time (4-6 s, scenario 8);
    # production's default unreachable budget (dead_after / 2 = 60 s) is ten times that restart.
    # Still far below the partition's cut (scenario 10), whose late writes must be refused.
    "RGRID_API_UNREACHABLE_BUDGET_SECONDS": "20",
}


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) for every process."""
    return {pid: (ppid, sid, state) for pid, (ppid, _pg, sid, state) in process_table().items()}


def server_processes(session: int) -> list[int]:
    """Every live process of one worker "server". The local grid starts a worker as the leader of
    its own session; the Ray node puts each of its worker processes (where runners run) in a process
    group of its own within that session, and each sandbox gets a session of its own below a runner.
    So: the session's members and all their descendants."""
    table = _processes()
    members = {pid for pid, (_pp, sid, st) in table.items() if sid == session and st != "Z"}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sid, st) in table.items():
        if st != "Z":
            children.setdefault(ppid, []).append(pid)
    todo, found = list(members), set(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def signal_server(session: int, sig: int) -> int:
    """Send sig to every process of a worker server (twice, to catch anything forked meanwhile).
    Returns how many processes it reached."""
    reached: set[int] = set()
    for _ in range(2):
        for pid in server_processes(session):
            try:
                os.kill(pid, sig)
                reached.add(pid)
            except ProcessLookupError:
                pass
    return len(reached)


@dataclass
class ChaosGrid(Grid):
    pg: PgServer = None
    db_name: str = ""
    timings: dict = field(default_factory=lambda: dict(dead_after=DEAD_AFTER, sweep=SWEEP, heartbeat=HEARTBEAT))
    # Worker servers detached from the provider: the teardown makes sure they are gone.
    orphans: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ state

    def current(self):
        """The grid's state file as it is now (the provider rewrites pids as it replaces workers)."""
        from rgrid_service.localgrid import grid as localgrid

        return localgrid.load_state(self.home)

    def fleet(self):
        from rgrid_service.fleet.process import ProcessFleet
        from rgrid_service.settings import ServiceSettings

        return ProcessFleet(self.home, ServiceSettings())

    def live_workers(self) -> dict[str, int]:
        """worker id -> process group, for workers whose process group is alive."""
        return {w: pg for w, pg in self.fleet().groups().items() if group_alive(pg)}

    def db_now(self) -> datetime:
        from rgrid_service import lifecycle

        with self.engine().connect() as conn:
            return lifecycle.db_now(conn)

    def wait_for_workers(self, n: int = WORKERS, timeout: float = 240) -> list[str]:
        """Until n workers are live processes, joined to Ray, active in the database with a fresh
        heartbeat, and no replacement is half-started. Returns their ids."""
        from rgrid_service.db.models import Worker, WorkerHeartbeat

        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                live = self.live_workers()
                ready = {w for w in live if "Ray runtime started" in self._log(f"{w}.log")}
                with self.engine().connect() as conn:
                    now = self.db_now()
                    rows = conn.execute(
                        select(Worker.id, Worker.state, WorkerHeartbeat.last_heartbeat_at)
                        .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id)
                        .where(Worker.id.in_(list(live)))
                    ).all()
                fresh = {r.id for r in rows if r.state == "active"
                         and (now - r.last_heartbeat_at).total_seconds() < 2 * HEARTBEAT + 1}
                seen = (sorted(live), sorted(ready), sorted(fresh))
                if len(live) == n and ready == fresh == set(live):
                    return sorted(live, key=lambda w: int(w[2:]))
            except Exception as e:  # noqa: BLE001 - the database may still be coming back
                seen = repr(e)
            time.sleep(0.5)
        raise AssertionError(f"the grid did not get back to {n} live workers within {timeout:.0f} s "
                             f"(live, joined, heartbeating: {seen})\n{self.tail('orchestrator.log')}")

    def _log(self, name: str) -> str:
        path = self.home / "local" / "logs" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, chars: int = 3000) -> str:
        return f"---- {name}\n{self._log(name)[-chars:]}"

    # ------------------------------------------------------------------ executions

    def submit_many(self, script: str, n: int, args: list[str] | None = None, threads: int = 4,
                    **fields) -> list[str]:
        """n executions of one script through the API, as a batch: every one is created and has its
        input uploaded first, then all are submitted, so the whole batch is queued at once."""
        import hashlib

        import httpx

        body = script.encode()
        spec = {"name": "job.py", "kind": "file", "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                "md5": hashlib.md5(body).hexdigest()}

        def create(_i) -> str:
            with self.api() as api:
                created = api.post("/v1/executions", json={"script": "job.py", "args": args or [],
                                                           "inputs": [spec], **fields})
                assert created.status_code == 201, created.text
            for upload in created.json()["uploads"]:
                assert httpx.put(upload["url"], content=body).status_code == 200
            return created.json()["id"]

        def submit(ex_id: str) -> None:
            with self.api() as api:
                r = api.post(f"/v1/executions/{ex_id}/submit")
                assert r.status_code == 200, r.text

        with ThreadPoolExecutor(threads) as pool:
            ids = list(pool.map(create, range(n)))
            list(pool.map(submit, ids))
        return ids

    def wait_all(self, ids: list[str], timeout: float = 300) -> dict[str, dict]:
        """Grid.wait_all, explaining what is stuck when it times out."""
        try:
            return super().wait_all(ids, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.explain(ids)}") from None

    def explain(self, ids: list[str]) -> str:
        """The unfinished executions with their attempts, and the logs that say why."""
        from rgrid_service.db.models import Execution, ExecutionAttempt
        from rgrid_core.states import TERMINAL

        lines = []
        with self.engine().connect() as conn:
            stuck = conn.execute(select(Execution.id, Execution.status, Execution.attempt, Execution.worker_id,
                                        Execution.dispatched_to, Execution.dispatched_at, Execution.heartbeat_at)
                                 .where(Execution.id.in_(ids), Execution.status.not_in(TERMINAL))).all()
            for ex in stuck:
                lines.append(f"stuck: {ex}")
                for a in conn.execute(select(ExecutionAttempt.__table__)
                                      .where(ExecutionAttempt.execution_id == ex.id)).all():
                    lines.append(f"   {a}")
        logs = self.home / "local" / "logs"
        for ex in stuck[:3]:
            for path in sorted(logs.glob("*.log")):
                hits = [ln for ln in path.read_text(errors="replace").splitlines() if ex.id in ln]
                if hits:
                    lines.append(f"---- {path.name} mentions {ex.id}:\n" + "\n".join(hits[-15:]))
            for path in sorted((self.home / "local" / "ray").glob("session_*/logs/worker-*.err")):
                text = path.read_text(errors="replace")
                if ex.id in text:
                    lines.append(f"---- {path}:\n{text[-3000:]}")
        return "\n".join(lines)

    def execution(self, execution_id: str) -> dict:
        with self.api() as api:
            return api.get(f"/v1/executions/{execution_id}").json()

    def wait_status(self, execution_id: str, statuses: tuple[str, ...], timeout: float = 120,
                    where=lambda ex: True) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ex = self.execution(execution_id)
            if ex["status"] in statuses and where(ex):
                return ex
            time.sleep(0.1)
        raise AssertionError(f"{execution_id} never reached {statuses}: {self.execution(execution_id)}")

    def running_on(self, ids: list[str]) -> dict[str, list[str]]:
        """worker id -> executions running on it right now (database view)."""
        from rgrid_service.db.models import Execution
        from rgrid_core.states import ExecutionStatus

        with self.engine().connect() as conn:
            rows = conn.execute(
                select(Execution.id, Execution.worker_id)
                .where(Execution.id.in_(ids), Execution.status == ExecutionStatus.RUNNING)
            ).all()
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r.worker_id, []).append(r.id)
        return out

    def count_status(self, ids: list[str]) -> dict[str, int]:
        from sqlalchemy import func

        from rgrid_service.db.models import Execution

        with self.engine().connect() as conn:
            return dict(conn.execute(
                select(Execution.status, func.count()).where(Execution.id.in_(ids)).group_by(Execution.status)
            ).all())

    # ------------------------------------------------------------------ faults

    def kill_worker(self, worker_id: str, sig: int = signal.SIGKILL) -> int:
        """Signal the whole worker server (see server_processes); returns its session id."""
        session = self.fleet().groups()[worker_id]
        assert signal_server(session, sig) >= 2, f"{worker_id} has no processes left to signal"
        return session

    def detach_worker(self, worker_id: str) -> int:
        """Take a worker out of the local provider's reach, as a partitioned server the cloud API
        cannot delete: the provider's delete then finds nothing to kill, and the worker's own agent
        must take it down once it can talk to the database again."""
        fleet = self.fleet()
        with fleet._record() as record:
            pgid = record["groups"].pop(worker_id)
        self.orphans.append(pgid)
        return pgid

    def store(self):
        """The grid's object store, with the grid's own credentials."""
        from rgrid_service.settings import ServiceSettings
        from rgrid_service.storage import ObjectStore

        keys = json.loads((self.home / "local" / "s3-credentials.json").read_text())
        return ObjectStore(ServiceSettings(s3_endpoint=self.state.s3_endpoint, s3_access_key=keys[0],
                                           s3_secret_key=keys[1], s3_bucket="rgrid"))

    def pg_ctl(self, *args: str) -> None:
        pg = self.pg
        _run_as_owner([str(pg.bindir / "pg_ctl"), *args, "-D", str(pg.data)], cwd=pg.base,
                      log=pg.base / "tools.log")

    def pg_stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")

    def pg_start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.pg.base / "server.log"), "-o", self.pg.opts)


class Poller:
    """Polls API endpoints as fast as it can in a thread and records (time, path, status, body)."""

    def __init__(self, grid: ChaosGrid, paths: list[str]):
        self.grid, self.paths = grid, paths
        self.records: list[tuple[float, str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        import httpx

        with self.grid.api() as api:
            api.timeout = httpx.Timeout(5.0)
            while not self._stop.is_set():
                for path in self.paths:
                    t = time.monotonic()
                    try:
                        r = api.get(path)
                        self.records.append((t, path, r.status_code, r.text))
                    except httpx.HTTPError as e:
                        self.records.append((t, path, -1, repr(e)))
                time.sleep(0.02)


@pytest.fixture(scope="module")
def chaos_grid(pg_server: PgServer):
    """One grid for the scenarios, stopped after them (so it never idles beside the integration
    suite's grid on a small CI machine)."""
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    from rgrid_service.localgrid import grid as localgrid

    name = "chaos_" + uuid.uuid4().hex[:12]
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
        # The shared test cluster runs with synchronous_commit=off for speed, which lets a crash
        # (`pg_ctl restart -m immediate`) drop commits it had already acknowledged; no production
        # database does that. The chaos database commits durably, as production would.
        conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = on")
    started = time.monotonic()
    home, state = start_test_grid("rgc-", CHAOS_ENV, workers=WORKERS, database_url=pg_server.url(name))
    grid = ChaosGrid(home, state, pg=pg_server, db_name=name)
    grid.wait_for_workers()
    print(f"\nchaos grid up in {time.monotonic() - started:.0f} s at {home} (database {name})")
    try:
        yield grid
    finally:
        for session in grid.orphans:  # a detached worker the provider no longer knows about
            signal_server(session, signal.SIGKILL)
        localgrid.down(home)
        from rgrid_service.db.session import engine_for

        engine_for(pg_server.url(name)).dispose()
        try:
            with pg_server.admin() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except Exception:  # noqa: BLE001 - the cluster is torn down with the session anyway
            pass
        remove_grid_dirs(home)


@pytest.fixture
def chaos(chaos_grid: ChaosGrid) -> ChaosGrid:
    """The chaos grid, back at three live workers before the scenario starts."""
    chaos_grid.wait_for_workers()
    return chaos_grid

"""Shared fixtures: a real local grid (SeaweedFS, Ray head + 2 worker nodes, API, orchestrator)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REQUIRE_ALL = os.environ.get("RGRID_REQUIRE_ALL") == "1"
RGRID = str(Path(sys.executable).with_name("rgrid"))

# Test-speed timings, inherited by every grid process.
GRID_ENV = {
    "RGRID_DISPATCH_INTERVAL_SECONDS": "0.2",
    "RGRID_LOG_FLUSH_INTERVAL_SECONDS": "0.1",
    "RGRID_LEASE_CHECK_INTERVAL_SECONDS": "0.3",
    "RGRID_LOG_LIMIT_BYTES": str(1024 * 1024),
    "RGRID_SANDBOX_MEMORY_MB": "512",
    "RGRID_PROVISION_INTERVAL_SECONDS": "1",
    # Inputs over 8 MiB go up in parts of 5 MiB (S3's smallest), so tests exercise multipart.
    "RGRID_MULTIPART_THRESHOLD_BYTES": str(8 * 1024 * 1024),
    "RGRID_MULTIPART_PART_BYTES": str(5 * 1024 * 1024),
    "RAY_USAGE_STATS_ENABLED": "0",
    # The grids of tests/integration, chaos and fleet run scripts in bubblewrap, as they were
    # written for; tests/docker starts grids whose workers have Docker.
    "RGRID_LOCAL_DOCKER": "0",
}


def wait_until(predicate, timeout: float, what: str, step: float = 0.1):
    """predicate()'s first true value, polled every step seconds; an AssertionError naming what
    was awaited once timeout passes."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def remove_grid_dirs(home: Path) -> None:
    """A stopped test grid's folders: its home, and what it keeps under /tmp (staging, Ray's)."""
    from rgrid_service.localgrid.layout import ray_temp_dir, work_root

    for path in (work_root(home), ray_temp_dir(home), home):
        shutil.rmtree(path, ignore_errors=True)


def missing(what: str, how: str):
    message = f"{what} is not available: {how}"
    if REQUIRE_ALL:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Grid:
    home: Path
    state: object

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RGRID_API_URL", None)
        env.pop("RGRID_API_KEY", None)
        env["RGRID_HOME"] = str(self.home)
        return env

    def rgrid(self, *args: str, cwd: Path | None = None, timeout: float = 120, input: bytes | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RGRID, *args], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
            timeout=timeout, input=input,
        )

    def submit(self, script_text: str, args: list[str] | None = None, name: str = "job.py",
               extra_inputs: dict[str, bytes] | None = None, queue: bool = True, **fields) -> str:
        """Queue an execution straight through the API (no CLI start-up per job): create,
        upload each input through its presigned URL, submit (unless not `queue`: the caller
        submits it). Returns the execution id."""
        import hashlib

        files = {name: script_text.encode(), **(extra_inputs or {})}
        specs = [{"name": n, "kind": "file", "size": len(b), "sha256": hashlib.sha256(b).hexdigest(),
                  "md5": hashlib.md5(b).hexdigest()} for n, b in files.items()]
        with self.api() as api:
            created = api.post("/v1/executions", json={"script": name, "args": args or [], "inputs": specs,
                                                       **fields})
            assert created.status_code == 201, created.text
            body = created.json()
            for upload in body["uploads"]:
                assert httpx.put(upload["url"], content=files[upload["name"]]).status_code == 200
        if queue:
            self.queue(body["id"])
        return body["id"]

    def queue(self, *ids: str) -> None:
        """Submit executions created with submit(queue=False), back to back."""
        with self.api() as api:
            for some_id in ids:
                submitted = api.post(f"/v1/executions/{some_id}/submit")
                assert submitted.status_code == 200, submitted.text

    def wait_all(self, ids: list[str], timeout: float = 300) -> dict[str, dict]:
        """Poll until every execution is terminal; returns id -> execution."""
        import time

        deadline = time.monotonic() + timeout
        done: dict[str, dict] = {}
        with self.api() as api:
            while len(done) < len(ids):
                assert time.monotonic() < deadline, f"{len(ids) - len(done)} executions did not finish"
                for ex_id in ids:
                    if ex_id not in done:
                        ex = api.get(f"/v1/executions/{ex_id}").json()
                        if ex["status"] in ("succeeded", "failed", "timed_out", "canceled", "lost"):
                            done[ex_id] = ex
                time.sleep(0.3)
        return done

    def unfinished(self, script: str | None = None) -> list[str]:
        """Ids of the executions queued or running on this grid (those of one script name only,
        if given): the session grid is shared, so a test can see what others left."""
        from sqlalchemy import select

        from rgrid_service.db.models import Execution

        query = select(Execution.id).where(Execution.status.in_(["queued", "running"]))
        if script is not None:
            query = query.where(Execution.script == script)
        with self.engine().connect() as conn:
            return list(conn.execute(query).scalars())

    def cancel(self, *ids: str) -> None:
        """Cancel executions or batches (b-…) a test started, finished or not: a test that fails
        must not leave its runs on the shared grid for the tests after it."""
        with self.api() as api:
            for some_id in ids:
                kind = "batches" if some_id.startswith("b-") else "executions"
                api.post(f"/v1/{kind}/{some_id}/cancel")  # 409 once it has ended: nothing to do

    def wait_idle(self, timeout: float = 60) -> None:
        """Until nothing is queued or running on the grid: a test about placement needs every
        worker equally free, whatever the tests before it left."""
        try:
            wait_until(lambda: not self.unfinished(), timeout, "an idle grid", step=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}: still unfinished {self.unfinished()}") from None

    def engine(self):
        from rgrid_service.db.session import engine_for

        return engine_for(self.state.database_url)

    def api(self, key: str | None = "own") -> httpx.Client:
        headers = {}
        if key == "own":
            headers["Authorization"] = f"Bearer {self.state.api_key}"
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.state.api_url, headers=headers, timeout=30)


def interrupt(proc: subprocess.Popen, grid: Grid, timeout: float = 60) -> tuple[bytes, bytes]:
    """Ctrl-C (SIGINT) to a CLI started with FAULTHANDLER in its environment; its (stdout, stderr)
    once it has exited. One that has not exited within `timeout` is made to print where each of its
    threads is (SIGABRT: faulthandler), then killed, and the test fails with that and the API's log."""
    import signal

    from rgrid_service.localgrid.layout import logs_dir

    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        api_log = (logs_dir(grid.home) / "api.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"the CLI did not exit within {timeout:.0f} s of Ctrl-C; its stderr and stacks:\n"
                             f"{err.decode(errors='replace')[-6000:]}\n---- api.log\n{api_log}") from None


FAULTHANDLER = {"PYTHONFAULTHANDLER": "1"}  # a CLI that hangs can then be asked where (interrupt())


@pytest.fixture
def main_thread_loop():
    """A current event loop on the main thread, for pulumi's mocks: its Outputs are asyncio futures
    made on it. A test before (asyncio.run, which leaves the thread without one) would otherwise
    make them fail with "There is no current event loop"."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def ctrl_c_default() -> None:
    """Popen's preexec_fn for a CLI a test will Ctrl-C: SIGINT back to its default action. A job
    started with `&` by a non-interactive shell (a CI runner's, say) inherits SIGINT ignored, and
    Python then never installs its KeyboardInterrupt handler, so the CLI would rightly ignore the
    test's Ctrl-C as any background job does."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_active_workers(grid: Grid, n: int, timeout: float = 120) -> None:
    """Until n workers have registered: a grid's API answers before its workers' agents have
    reached it, and a test that places runs must find every worker there."""
    from sqlalchemy import func, select

    from rgrid_service.db.models import Worker

    def active() -> bool:
        with grid.engine().connect() as conn:
            return conn.execute(select(func.count()).where(Worker.state == "active")).scalar_one() >= n

    try:
        wait_until(active, timeout, f"{n} workers to register", step=0.2)
    except AssertionError as e:
        from rgrid_service.localgrid.layout import logs_dir

        with grid.engine().connect() as conn:
            states = conn.execute(select(Worker.id, Worker.state)).all()
        tails = "".join(f"\n---- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                        for log in sorted(logs_dir(grid.home).glob("*.log")) if "w-" in log.name or "api" in log.name)
        raise AssertionError(f"{e}; workers {states}{tails}") from None


def start_test_grid(prefix: str, env: dict[str, str], **up_kwargs):
    """Start a local grid for tests in a fresh short home (Ray's socket paths must stay short);
    `env` is set only while the grid starts, so its processes inherit it. Returns (home, state)."""
    from rgrid_service.localgrid import grid as localgrid

    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return home, localgrid.up(home, **up_kwargs)
    except Exception:
        for log in sorted((home / "local" / "logs").glob("*.log")):
            print(f"---- {log}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL for the whole session (see tests/pgserver.py)."""
    from tests.pgserver import pg_server_fixture

    yield from pg_server_fixture()


@pytest.fixture(scope="session")
def grid():
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    from rgrid_service.localgrid import grid as localgrid

    home, state = start_test_grid("rgt-", GRID_ENV, workers=3)
    grid = Grid(home, state)
    try:
        wait_for_active_workers(grid, 3)
    except BaseException:
        localgrid.down(home)
        raise
    yield grid
    localgrid.down(home)
    remove_grid_dirs(home)


@pytest.fixture(scope="session")
def dashboard_grid():
    """A smaller second grid with Ray's dashboard on (RGRID_RAY_DASHBOARD=1); `grid` runs as a user's
    does, without it."""
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    from rgrid_service.localgrid import grid as localgrid

    home, state = start_test_grid("rgd-", {**GRID_ENV, "RGRID_RAY_DASHBOARD": "1"}, workers=1)
    yield Grid(home, state)
    localgrid.down(home)
    remove_grid_dirs(home)

"""The local grid: the real stack as processes on 127.0.0.1.

SeaweedFS (S3), a Ray head, N Ray worker nodes (2 slots each), the API and the orchestrator, all
started detached in their own process groups and recorded in <home>/local/state.json, so that any
later `rgrid` command can find them and `rgrid local down` can stop them.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select, update

from rgrid_core.constants import SLOT_RESOURCE, SLOTS_PER_WORKER, WORKER_LABEL
from rgrid_core.states import WorkerState

from ..auth import create_key
from ..db.models import Worker
from ..db.session import engine_for, upgrade_schema, write_tx
from ..raynet import ray_process_env
from ..settings import ServiceSettings
from ..storage import ObjectStore
from .procs import alive, free_ports, spawn, stop_groups, wait_for_port
from .seaweed import start_seaweed



@dataclass
class GridState:
    home: str
    api_url: str
    api_key: str
    ray_address: str
    dashboard_url: str
    s3_endpoint: str
    database_url: str
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid (= its process group)
    s3_command: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return state_path(Path(self.home))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def components(self) -> dict[str, bool]:
        return {name: alive(pid) for name, pid in self.pids.items()}

    def workers(self) -> list[str]:
        return sorted((n for n in self.pids if n.startswith("w-")), key=lambda n: int(n[2:]))


def state_path(home: Path) -> Path:
    return home / "local" / "state.json"


def load_state(home: Path) -> GridState | None:
    try:
        return GridState(**json.loads(state_path(home).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def is_running(home: Path) -> GridState | None:
    state = load_state(home)
    if state and state.pids and all(state.components().values()):
        return state
    return None


def service_env_for(state: GridState) -> dict[str, str]:
    """The environment of every grid process, rebuilt from the saved state."""
    keys = tuple(json.loads((Path(state.home) / "local" / "s3-credentials.json").read_text()))
    return service_env(state, keys)


def service_env(state: GridState, s3_keys: tuple[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RGRID_DATABASE_URL=state.database_url,
        RGRID_S3_ENDPOINT=state.s3_endpoint,
        RGRID_S3_ACCESS_KEY=s3_keys[0],
        RGRID_S3_SECRET_KEY=s3_keys[1],
        RGRID_S3_BUCKET="rgrid",
        RGRID_RAY_ADDRESS=state.ray_address,
        RGRID_RAY_DASHBOARD_URL=state.dashboard_url,
        RGRID_LOCAL_GRID_HOME=state.home,
        RGRID_WORK_ROOT=str(work_root(Path(state.home))),
    )
    return env


def work_root(home: Path) -> Path:
    """Where runners stage /work. The sandbox runs as an unprivileged uid that must be able to reach
    it, so it lives under the system temp dir rather than inside a possibly private home."""
    import hashlib
    import tempfile

    tag = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"rgrid-work-{tag}"


def up(home: Path, workers: int = 2, on_step=lambda msg: None, database_url: str | None = None) -> GridState:
    """Start the local grid (or return the running one). database_url replaces the SQLite file,
    e.g. with a PostgreSQL the tests started."""
    running = is_running(home)
    if running:
        return running
    old = load_state(home)
    if old:  # half-dead leftovers of an earlier grid
        stop_groups(list(old.pids.values()), grace=5)
    local = home / "local"
    logs = local / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    secrets_file = local / "s3-credentials.json"
    if secrets_file.exists():
        keys = tuple(json.loads(secrets_file.read_text()))
    else:
        keys = ("rgrid-" + secrets.token_hex(4), secrets.token_urlsafe(24))
        secrets_file.write_text(json.dumps(keys))
        secrets_file.chmod(0o600)
    api_port, ray_port, dash_port = free_ports(3)
    state = GridState(
        home=str(home), api_url=f"http://127.0.0.1:{api_port}", api_key="",
        ray_address=f"127.0.0.1:{ray_port}", dashboard_url=f"http://127.0.0.1:{dash_port}",
        s3_endpoint="", database_url=database_url or f"sqlite:///{local / 'rgrid.db'}",
    )
    try:
        on_step("object store (SeaweedFS)")
        pid, s3_port, state.s3_command = start_seaweed(local / "s3", keys[0], keys[1], logs / "seaweedfs.log")
        state.pids["s3"] = pid
        state.s3_endpoint = f"127.0.0.1:{s3_port}"
        state.save()
        env = service_env(state, keys)

        on_step("Ray head")
        ray_env = ray_process_env(env)
        state.pids["ray-head"] = spawn(
            [sys.executable, "-m", "rgrid_service.raynet", "start", "--head", "--block",
             "--node-ip-address", "127.0.0.1", "--port", str(ray_port), "--num-cpus", "0",
             "--disable-usage-stats", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
             *node_ports(head=True), "--temp-dir", str(local / "ray")],
            logs / "ray-head.log", env=ray_env,
        )
        state.save()

        on_step("database")
        upgrade_schema(state.database_url)
        engine = engine_for(state.database_url)
        key_file = local / "api-key"
        if key_file.exists():
            state.api_key = key_file.read_text().strip()
        else:
            state.api_key = create_key(engine, "local", "local user")
            key_file.write_text(state.api_key)
            key_file.chmod(0o600)
        retire_workers(state.database_url)
        settings = ServiceSettings(s3_endpoint=state.s3_endpoint, s3_access_key=keys[0], s3_secret_key=keys[1])
        _retry(lambda: ObjectStore(settings).ensure_bucket(), 30)

        _wait_for_log(logs / "ray-head.log", "Ray runtime started", 120, "The Ray head")
        # One node at a time: on a 2-core machine, concurrent raylet start-ups can overrun Ray's
        # fixed 30 s registration window.
        for i in range(1, workers + 1):
            on_step(f"worker node {i} of {workers}")
            start_worker(state, env, new_worker_id(state))

        on_step("API and orchestrator")
        start_api(state, env)
        start_orchestrator(state, env)
        wait_for_port(api_port, 60, "The API")
        return state
    except BaseException:
        stop_groups(list(state.pids.values()), grace=5)
        raise


def node_ports(head: bool) -> list[str]:
    """Free ports for the Ray listeners that otherwise default to fixed numbers (the dashboard
    agent's 52365, the client server's 10001), so several grids and nodes share one machine."""
    agent_http, client = free_ports(2)
    ports = ["--dashboard-agent-listen-port", str(agent_http)]
    if head:
        ports += ["--ray-client-server-port", str(client)]
    return ports


def start_api(state: GridState, env: dict[str, str]) -> None:
    port = state.api_url.rsplit(":", 1)[1]
    state.pids["api"] = spawn(
        [sys.executable, "-m", "uvicorn", "rgrid_service.api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", port, "--log-level", "warning"],
        Path(state.home) / "local" / "logs" / "api.log", env=env,
    )
    state.save()


def start_orchestrator(state: GridState, env: dict[str, str]) -> None:
    state.pids["orchestrator"] = spawn(
        [sys.executable, "-m", "rgrid_service.orchestrator"],
        Path(state.home) / "local" / "logs" / "orchestrator.log", env=ray_process_env(env),
    )
    state.save()


def restart(home: Path, component: str, pause: float = 0.0) -> None:
    """Stop one control-plane component (api | orchestrator) and start it again."""
    state = load_state(home)
    if state is None or component not in ("api", "orchestrator"):
        raise ValueError(f"cannot restart {component!r}")
    stop_groups([state.pids[component]], grace=5)
    time.sleep(pause)
    env = service_env_for(state)
    (start_api if component == "api" else start_orchestrator)(state, env)
    if component == "api":
        wait_for_port(int(state.api_url.rsplit(":", 1)[1]), 60, "The API")


def restart_s3(home: Path, down_seconds: float) -> None:
    """Stop the object store, keep it away for down_seconds, start it again on the same ports."""
    state = load_state(home)
    stop_groups([state.pids["s3"]], grace=3)
    time.sleep(down_seconds)
    state.pids["s3"] = spawn(state.s3_command, Path(home) / "local" / "logs" / "seaweedfs.log")
    state.save()
    port = int(state.s3_endpoint.rsplit(":", 1)[1])
    wait_for_port(port, 60, "SeaweedFS S3 gateway")


def start_worker(state: GridState, env: dict[str, str], worker_id: str, tries: int = 2) -> None:
    """Start one worker "server" and wait until its Ray node has joined (retrying once)."""
    log_path = Path(state.home) / "local" / "logs" / f"{worker_id}.log"
    for attempt in range(tries):
        offset = log_path.stat().st_size if log_path.exists() else 0
        add_worker(state, env, worker_id)
        try:
            _wait_for_log(log_path, "Ray runtime started", 90, f"Worker node {worker_id}", offset,
                          pid=state.pids[worker_id])
            return
        except TimeoutError:
            stop_groups([state.pids.pop(worker_id)], grace=5)
            if attempt == tries - 1:
                raise


def add_worker(state: GridState, env: dict[str, str], worker_id: str) -> None:
    """Launch one worker "server": a Ray worker node advertising its slots, labelled with its id,
    and its agent (heartbeats) in the same process group, so they live and die together."""
    logs = Path(state.home) / "local" / "logs"
    worker_env = ray_process_env({**env, "RGRID_WORKER_ID": worker_id})
    ray_node = [sys.executable, "-m", "rgrid_service.raynet", "start", "--block",
                "--address", state.ray_address, "--node-ip-address", "127.0.0.1",
                "--num-cpus", str(SLOTS_PER_WORKER),
                "--resources", json.dumps({SLOT_RESOURCE: SLOTS_PER_WORKER}),
                "--labels", json.dumps({WORKER_LABEL: worker_id}),
                *node_ports(head=False), "--disable-usage-stats"]
    agent = [sys.executable, "-m", "rgrid_runner.agent", "--worker-id", worker_id, "--slots", str(SLOTS_PER_WORKER)]
    agent_log = logs / f"{worker_id}-agent.log"
    # One session per "server": the shell starts the agent in the background, then becomes the
    # Ray node, so both share the process group that stands for the server.
    script = f"{shlex.join(agent)} >>{shlex.quote(str(agent_log))} 2>&1 &\nexec {shlex.join(ray_node)}"
    state.pids[worker_id] = spawn(["/bin/sh", "-c", script], logs / f"{worker_id}.log", env=worker_env)
    state.save()


def new_worker_id(state: GridState) -> str:
    """w-<n>, never used before in this grid's database: a dead worker's id stays dead."""
    with engine_for(state.database_url).connect() as conn:
        known = conn.execute(select(Worker.id)).scalars().all()
    numbers = [int(n[2:]) for n in [*known, *state.workers()] if n.startswith("w-") and n[2:].isdigit()]
    return f"w-{max(numbers, default=0) + 1}"


def retire_workers(database_url: str) -> None:
    """Workers of an earlier local grid session are gone for good: mark them deleted."""
    with write_tx(engine_for(database_url)) as conn:
        conn.execute(update(Worker).where(Worker.provider == "local", Worker.state != WorkerState.DEAD).values(state=WorkerState.DELETED))


def down(home: Path) -> bool:
    state = load_state(home)
    if not state:
        return False
    # Stop the front first so nothing new is dispatched, then everything at once.
    order = ["orchestrator", "api"] + state.workers() + ["ray-head", "s3"]
    stop_groups([state.pids[n] for n in order if n in state.pids], grace=8)
    try:
        retire_workers(state.database_url)
    except Exception:  # noqa: BLE001 - the database may be gone with the grid; nothing to retire then
        pass
    state.path.unlink(missing_ok=True)
    return True


def _retry(fn, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _wait_for_log(path: Path, needle: str, timeout: float, what: str, offset: int = 0,
                  pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, errors="replace") as f:
                f.seek(offset)
                if needle in f.read():
                    return
        if pid is not None and not alive(pid):
            raise TimeoutError(f"{what} exited during start-up; see {path}.")
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not start within {timeout:.0f} s; see {path}.")

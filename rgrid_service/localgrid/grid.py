"""The local grid: the real stack as processes on 127.0.0.1.

SeaweedFS (S3), a Ray head, the worker fleet, the API and the orchestrator (and, where this machine
can run it, a Docker engine and the runtime images' registry for the workers: .docker), each
started detached in its own process group and recorded in `<home>/local/state.json`
(rgrid_core.localstate), so that any later `rgrid` command finds them and `rgrid local down` stops them.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rgrid_core.constants import SLOTS_PER_WORKER
from rgrid_core.localstate import GridState, is_running, load_state
from rgrid_core.states import WorkerState

from ..secrets import SECRET_KEY_ENV
from ..settings import ServiceSettings
from . import bootstrap, cloud, docker
from .layout import logs_dir, local_dir, ray_token_file, work_root
from .procs import free_ports, free_udp_port, spawn, stop_groups, wait_for_port
from .rayhead import start_head
from .seaweed import start_seaweed

LOCAL_SERVER_TYPE = "local"


def service_env(state: GridState, s3_keys: tuple[str, str]) -> dict[str, str]:
    """The environment of every grid process: this one's, with the settings the grid started with
    and the grid's own addresses and keys."""
    env = {**os.environ, **state.started_env}
    env.update(
        RGRID_DATABASE_URL=state.database_url,
        RGRID_S3_ENDPOINT=state.s3_endpoint,
        RGRID_S3_ACCESS_KEY=s3_keys[0],
        RGRID_S3_SECRET_KEY=s3_keys[1],
        RGRID_S3_BUCKET="rgrid",
        RGRID_RAY_ADDRESS=state.ray_address,
        RGRID_RAY_TOKEN_FILE=str(ray_token_file(Path(state.home))),
        RGRID_LOCAL_GRID_HOME=state.home,
        RGRID_FLEET=state.fleet,
        RGRID_WORK_ROOT=str(work_root(Path(state.home))),
        RGRID_WORKER_API_URL=state.api_url,
        **docker.worker_env(state),
    )
    env.pop(SECRET_KEY_ENV, None)  # the API's and the orchestrator's alone (control_plane_env)
    env.pop("RGRID_RAY_DASHBOARD_URL", None)
    if state.dashboard_url:  # none without RGRID_RAY_DASHBOARD: GET /v1/cluster says null
        env["RGRID_RAY_DASHBOARD_URL"] = state.dashboard_url
    return env


def control_plane_env(state: GridState, env: dict[str, str]) -> dict[str, str]:
    """The API's and the orchestrator's environment: every grid process's, the secret key, the
    port of the queue's bell (rgrid_service.queuebell) and the runtime images' digests file."""
    bell = {"RGRID_WAKE_HOST": "127.0.0.1", "RGRID_WAKE_PORT": str(state.wake_port)} if state.wake_port else {}
    return {**env, SECRET_KEY_ENV: bootstrap.secret_key(Path(state.home)), **bell, **docker.control_plane_env(state, env)}


def service_env_for(state: GridState) -> dict[str, str]:
    """service_env() rebuilt from the saved state, with the fleet's settings (and, for the pulumi
    fleet, the cloud token from its file), so a restarted component runs as the first one did."""
    env = {**service_env(state, bootstrap.s3_keys(Path(state.home))), **state.fleet_env}
    if state.fleet == "pulumi":
        env["RGRID_HCLOUD_TOKEN"] = cloud.token(Path(state.home))
    return env


def started_settings(environ: dict[str, str]) -> dict[str, str]:
    """The RGRID_* and RAY_* settings in the starter's environment that are not credentials: what
    a restarted component needs to run as the first one did."""
    from ..fleet.process import credential_like

    return {k: v for k, v in environ.items()
            if k.startswith(("RGRID_", "RAY_")) and not credential_like(k)}


def up(home: Path, workers: int | None = None, on_step=lambda msg: None, database_url: str | None = None,
       fleet: str = "process", max_workers: int | None = None, on_note=lambda msg: None) -> GridState:
    """Start the local grid (or return the running one). database_url replaces the SQLite file,
    e.g. with a PostgreSQL the tests started. With the process fleet the grid keeps `workers`
    (default 2) workers; with the pulumi fleet it keeps at least `workers` (default 0) and grows
    with the queue up to `max_workers`. on_note hears what a person should know about the grid
    that started (its workers have no Docker, and why)."""
    if workers is None:
        workers = 2 if fleet == "process" else 0
    running = is_running(home)
    if running:
        return running
    old = load_state(home)
    if old:  # half-dead leftovers of an earlier grid
        docker.begin_stop(old)
        stop_groups([pid for name, pid in old.pids.items() if name != "docker"], grace=5)
        docker.stop(old)
    logs_dir(home).mkdir(parents=True, exist_ok=True)
    keys = bootstrap.s3_keys(home)
    bootstrap.ray_token(home)
    ray_port, dash_port = free_ports(2)
    if not ServiceSettings(_env_file=None).ray_dashboard:
        dash_port = None
    state = GridState(
        home=str(home), api_url="", api_key="",
        ray_address=f"127.0.0.1:{ray_port}", dashboard_url=f"http://127.0.0.1:{dash_port}" if dash_port else "",
        s3_endpoint="", database_url=database_url or f"sqlite:///{local_dir(home) / 'rgrid.db'}", fleet=fleet,
        started_env=started_settings(dict(os.environ)), wake_port=free_udp_port(),
    )
    fleet_env = fleet_settings(workers, max_workers if fleet != "process" else workers)
    try:
        if fleet == "pulumi":
            on_step("Pulumi engine (a first start on this machine builds it, which takes minutes)")
            bin_dir = cloud.ensure_engine(home)
            on_step("cloud API")
            state.pids["cloud"], state.cloud_url = cloud.start_cloud(home)
            state.save()
            fleet_env.update(cloud.fleet_env(home, bin_dir, state.cloud_url))
        state.fleet_env = {k: v for k, v in fleet_env.items() if k != "RGRID_HCLOUD_TOKEN"}
        on_step("object store (SeaweedFS)")
        pid, s3_port, state.s3_command = start_seaweed(local_dir(home) / "s3", keys[0], keys[1],
                                                       logs_dir(home) / "seaweedfs.log")
        state.pids["s3"] = pid
        state.s3_endpoint = f"127.0.0.1:{s3_port}"
        state.save()
        start_docker(state, on_step, on_note)
        env = {**service_env(state, keys), **fleet_env}

        on_step("Ray head")
        state.pids["ray-head"] = start_head(home, env, ray_port, dash_port)
        state.save()

        on_step("database")
        state.api_key = bootstrap.prepare_database(home, state.database_url)
        # The API's port is picked just before the API starts, and the API starts before the
        # workers: a port picked at the outset was now and then taken meanwhile by one of Ray's
        # processes (their ports are random), the API could not bind it, and no worker registered.
        api_port = free_ports(1)[0]
        state.api_url = f"http://127.0.0.1:{api_port}"
        env = {**service_env(state, keys), **fleet_env}
        settings = ServiceSettings(_env_file=None, **settings_from_env(control_plane_env(state, env)))
        bootstrap.prepare_bucket(settings)

        on_step("API")
        start_api(state, env)
        wait_for_port(api_port, 60, "The API")
        if fleet == "process":
            start_process_workers(home, settings, workers, on_step)
        on_step("orchestrator")
        start_orchestrator(state, env)
        return state
    except BaseException:
        stop_all(state)
        raise


def start_docker(state: GridState, on_step, on_note) -> None:
    """The workers' Docker engine and registry, where this machine can run them; without them
    (or when they fail to start and nobody asked for them) the workers keep bubblewrap."""
    settings = ServiceSettings(_env_file=None)
    reason = docker.why_not(settings)
    if reason is not None:
        if settings.local_docker and not settings.docker_host:
            raise docker.DockerUnavailable(f"RGRID_LOCAL_DOCKER asks for Docker, but {reason}.")
        if not settings.docker_host and settings.local_docker is None:
            on_note(f"No Docker for the workers ({reason}): {docker.NO_DOCKER}.")
        return
    on_step("Docker engine and runtime images")
    try:
        docker.record(state, docker.start(Path(state.home), on_step))
    except Exception as e:  # noqa: BLE001 - asked for or not, the person hears why
        if settings.local_docker:
            raise
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        on_note(f"No Docker for the workers ({why.rstrip('.')}): {docker.NO_DOCKER}.")
        return
    state.save()


def fleet_settings(min_workers: int, max_workers: int | None) -> dict[str, str]:
    """The fleet's bounds; no maximum given: the service's default."""
    if max_workers is None:
        max_workers = ServiceSettings.model_fields["max_workers"].default
    return {"RGRID_MIN_WORKERS": str(min_workers), "RGRID_MAX_WORKERS": str(max(max_workers, min_workers))}


def settings_from_env(env: dict[str, str]) -> dict[str, str]:
    return {k[len("RGRID_"):].lower(): v for k, v in env.items() if k.startswith("RGRID_")}


def start_process_workers(home: Path, settings: ServiceSettings, n: int, on_step) -> None:
    """The first workers, started before the API opens so the first run finds them: written as
    worker records, then converged by the process fleet (the orchestrator keeps them so)."""
    from ..db.session import engine_for
    from ..fleet import records
    from ..fleet.process import ProcessFleet

    engine = engine_for(settings.database_url)
    fleet = ProcessFleet(home, settings, SLOTS_PER_WORKER)
    records.request_workers(engine, n, fleet.name, LOCAL_SERVER_TYPE, "local", SLOTS_PER_WORKER)
    desired = records.desired_servers(engine, fleet.name)
    for i in range(1, len(desired) + 1):
        on_step(f"worker node {i} of {len(desired)}")
        servers = fleet.apply(desired[:i])
        records.move(engine, [s.worker_id for s in servers], WorkerState.BOOTING)


def start_api(state: GridState, env: dict[str, str]) -> None:
    port = state.api_url.rsplit(":", 1)[1]
    state.pids["api"] = spawn(
        # One process, whatever RGRID_API_WORKERS says: a local grid serves one user.
        [sys.executable, "-m", "rgrid_service.api", "--workers", "1",
         "--host", "127.0.0.1", "--port", port, "--log-level", "warning"],
        logs_dir(Path(state.home)) / "api.log", env=control_plane_env(state, env),
    )
    state.save()


def start_orchestrator(state: GridState, env: dict[str, str]) -> None:
    """The orchestrator, with its metrics on a free loopback port kept in the state (a restart reuses it)."""
    from ..raynet import ray_process_env

    if not state.orchestrator_metrics_url:
        state.orchestrator_metrics_url = f"http://127.0.0.1:{free_ports(1)[0]}/metrics"
    port = state.orchestrator_metrics_url.rsplit(":", 1)[1].removesuffix("/metrics")
    env = {**control_plane_env(state, env), "RGRID_ORCHESTRATOR_METRICS_HOST": "127.0.0.1",
           "RGRID_ORCHESTRATOR_METRICS_PORT": port}
    state.pids["orchestrator"] = spawn([sys.executable, "-m", "rgrid_service.orchestrator"],
                                       logs_dir(Path(state.home)) / "orchestrator.log", env=ray_process_env(env))
    state.save()


def stop_all(state: GridState) -> None:
    """Stop the front first so nothing new is dispatched, then the workers, then everything else."""
    from ..fleet.process import ProcessFleet

    front = [state.pids[n] for n in ("orchestrator", "api") if n in state.pids]
    stop_groups(front, grace=8)
    if state.fleet == "pulumi" and "cloud" in state.pids:
        _delete_cloud_servers(state)
        _kill_engine_leftovers(Path(state.home))
    ProcessFleet(Path(state.home), ServiceSettings(_env_file=None)).stop_all()
    docker.begin_stop(state)  # dockerd stops its containers first: it gets longer, meanwhile the rest stop
    stop_groups([pid for n, pid in state.pids.items() if n not in ("orchestrator", "api", "docker")], grace=8)
    docker.stop(state)


def _kill_engine_leftovers(home: Path) -> None:
    """Plugin processes of an update the orchestrator was running when it was stopped: the engine
    starts them in process groups of their own, so they outlive it."""
    import os
    import signal

    mark = str(cloud.pulumi_dir(home)).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if mark in f.read():
                        os.kill(int(entry), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


def _delete_cloud_servers(state: GridState) -> None:
    """Delete every worker server through the worker_pool stack (an update to an empty set), so the
    next start begins with no servers; if the engine cannot, the local cloud's machines stop with it."""
    import logging

    from ..fleet.pulumi import PulumiFleet

    try:
        settings = ServiceSettings(_env_file=None, **settings_from_env(service_env_for(state)))
        PulumiFleet.from_settings(settings).apply([])
    except Exception:  # noqa: BLE001 - stopping goes on; the cloud kills its machines on exit
        logging.getLogger("rgrid.localgrid").exception("could not delete the worker servers through the stack")


def down(home: Path) -> list[str]:
    """Stop every process of the grid; returns sentences saying what was done (empty: none ran)."""
    state = load_state(home)
    if not state:
        return []
    stop_all(state)
    said = ["Local grid stopped (data and results are kept)."]
    try:
        bootstrap.retire_workers(state.database_url)
    except Exception:  # noqa: BLE001 - the database may be gone with the grid; nothing to retire then
        pass
    state.path.unlink(missing_ok=True)
    staged = work_root(home)
    if staged.exists():
        size = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(staged, ignore_errors=True)
        said.append(f"Removed the workers' input cache and staging folders ({size / 1e6:.1f} MB in {staged}).")
    return said

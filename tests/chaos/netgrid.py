"""The partition grid: the chaos grid's components, each host in a network namespace of its own
(tests/chaos/netns.py), so a worker can really be cut off from the control plane.

The control plane's namespace holds a throwaway PostgreSQL cluster, SeaweedFS, the Ray head, the
API and the orchestrator, all on 10.241.255.1; each worker namespace holds one worker server (its
agent, its Ray node, its runners and their sandboxes), started with the fleet's own launch command
and environment (fleet.launch.worker_launch). The orchestrator manages no fleet: a cut-off worker
is a server the cloud cannot delete either, so only its own agent can take it down after the heal,
and no replacement muddles the count.

Teardown kills every process inside the namespaces and removes them, whatever happened.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rgrid_core.localstate import GridState

from tests.conftest import remove_grid_dirs
from tests.pgserver import start_cluster, stop_cluster

from .conftest import CHAOS_ENV, ChaosGrid
from .netns import SERVICE_IP, Topology, pids_in


@dataclass
class NetGrid(ChaosGrid):
    topo: Topology = None
    worker_ns: dict[str, int] = field(default_factory=dict)  # worker id -> its namespace's number
    service_env: dict = field(default_factory=dict)  # what every grid process was started with

    def live_workers(self) -> dict[str, int]:
        """worker id -> its Ray node's pid, for workers with processes left in their namespace."""
        return {w: self.state.pids[w] for w, n in self.worker_ns.items() if pids_in(self.topo.worker_ns(n))}

    def api_log_offset(self) -> int:
        path = self.home / "local" / "logs" / "api.log"
        return path.stat().st_size if path.exists() else 0

    def api_requests_from(self, ip: str, offset: int = 0) -> list[tuple[str, int]]:
        """(request line, status) of every request the API's access log shows from ip after offset."""
        import re

        path = self.home / "local" / "logs" / "api.log"
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
        found = []
        for m in re.finditer(rf'{re.escape(ip)}:\d+ - "([A-Z]+ [^"]+?) HTTP/[\d.]+" (\d{{3}})', text):
            found.append((m.group(1), int(m.group(2))))
        return found


def start_net_grid(workers: int) -> NetGrid:
    """Build the namespaces and start the grid in them. On any failure everything built so far is
    torn down before the error goes up."""
    from rgrid_service.db.session import engine_for
    from rgrid_service.fleet import records
    from rgrid_service.fleet.launch import worker_launch
    from rgrid_service.fleet.process import resolve
    from rgrid_service.localgrid import bootstrap, rayhead
    from rgrid_service.localgrid.grid import settings_from_env
    from rgrid_service.localgrid.layout import logs_dir, work_root
    from rgrid_service.localgrid.procs import free_ports, spawn, wait_for_port
    from rgrid_service.localgrid.seaweed import start_seaweed
    from rgrid_service.settings import ServiceSettings

    topo = Topology(workers)
    home = Path(tempfile.mkdtemp(prefix="rgn-", dir="/tmp"))
    grid = None
    pg = None
    try:
        topo.create()
        cp = tuple(topo.exec_in(topo.cp))
        logs = logs_dir(home)
        logs.mkdir(parents=True)
        pg = start_cluster(host=SERVICE_IP, netns=topo.cp)
        with pg.admin() as conn:  # durable commits, as in the chaos grid (see its conftest)
            conn.execute("ALTER DATABASE rgrid SET synchronous_commit = on")
        keys = bootstrap.s3_keys(home)
        s3_pid, s3_port, s3_cmd = start_seaweed(home / "local" / "s3", keys[0], keys[1], logs / "seaweedfs.log",
                                                ip=SERVICE_IP, prefix=cp)
        api_port, ray_port, dash_port = free_ports(3)
        state = GridState(home=str(home), api_url=f"http://{SERVICE_IP}:{api_port}", api_key="",
                          ray_address=f"{SERVICE_IP}:{ray_port}", dashboard_url=f"http://{SERVICE_IP}:{dash_port}",
                          s3_endpoint=f"{SERVICE_IP}:{s3_port}", database_url=pg.url("rgrid"), fleet="none",
                          pids={"s3": s3_pid}, s3_command=s3_cmd)
        state.save()
        grid = NetGrid(home, state, pg=pg, db_name="rgrid", topo=topo)
        env = {**os.environ, **CHAOS_ENV,
               "RGRID_DATABASE_URL": state.database_url, "RGRID_S3_ENDPOINT": state.s3_endpoint,
               "RGRID_S3_ACCESS_KEY": keys[0], "RGRID_S3_SECRET_KEY": keys[1], "RGRID_S3_BUCKET": "rgrid",
               "RGRID_RAY_ADDRESS": state.ray_address, "RGRID_RAY_DASHBOARD_URL": state.dashboard_url,
               "RGRID_WORK_ROOT": str(work_root(home)), "RGRID_MIN_WORKERS": "0", "RGRID_MAX_WORKERS": "0",
               "RGRID_WORKER_API_URL": state.api_url,
               "RGRID_RAY_TOKEN_FILE": str(bootstrap.ray_token(home))}  # Ray's token authentication
        for var in ("RGRID_LOCAL_GRID_HOME", "RGRID_FLEET", "RGRID_API_URL", "RGRID_API_KEY", "RGRID_SECRET_KEY"):
            env.pop(var, None)  # no fleet to manage: the workers are the suite's
        grid.service_env = env
        ray_env = rayhead.ray_process_env(env)

        rayhead.link_ray_logs(home)
        head_log = logs / "ray-head.log"
        state.pids["ray-head"] = spawn([*cp, *rayhead.head_command(home, ray_port, dash_port, ip=SERVICE_IP)],
                                       head_log, env=ray_env)
        state.save()
        rayhead.wait_for_log(head_log, "Ray runtime started", rayhead.START_TIMEOUT, "The Ray head",
                             pid=state.pids["ray-head"])

        state.api_key = bootstrap.prepare_database(home, state.database_url)
        # The control plane's secret key: the API's and the orchestrator's environment only.
        cp_env = {**env, "RGRID_SECRET_KEY": bootstrap.secret_key(home)}
        settings = ServiceSettings(_env_file=None, **settings_from_env(cp_env))
        bootstrap.prepare_bucket(settings)

        # The workers one at a time (a 2-core machine can miss Ray's registration window otherwise),
        # each with its record first (a worker token is issued with its record).
        ids = records.request_workers(engine_for(state.database_url), workers, "local", "local", "local", 2)
        # A worker gets its launch environment and none of the control plane's RGRID_* settings.
        worker_env = {k: v for k, v in env.items() if not k.startswith("RGRID_")}
        for n, worker_id in enumerate(ids, start=1):
            launch = worker_launch(worker_id, settings)
            log = logs / f"{worker_id}.log"
            state.pids[worker_id] = spawn([*topo.exec_in(topo.worker_ns(n)), resolve(launch.argv[0]), *launch.argv[1:]],
                                          log, env={**worker_env, **launch.env})
            grid.worker_ns[worker_id] = n
            state.save()
            rayhead.wait_for_log(log, "Ray runtime started", 90, f"Worker node {worker_id}", pid=state.pids[worker_id])

        # Its access log (uvicorn at info) records every request with the client's address: the
        # scenario reads what the cut-off worker asked after the heal, and what it was answered.
        state.pids["api"] = spawn(
            [*cp, sys.executable, "-m", "uvicorn", "rgrid_service.api.app:create_app", "--factory",
             "--host", SERVICE_IP, "--port", str(api_port), "--log-level", "info"], logs / "api.log", env=cp_env)
        state.pids["orchestrator"] = spawn([*cp, sys.executable, "-m", "rgrid_service.orchestrator"],
                                           logs / "orchestrator.log", env=rayhead.ray_process_env(cp_env))
        state.save()
        wait_for_port(api_port, 60, "The API", host=SERVICE_IP)
        return grid
    except BaseException:
        for log in sorted((home / "local" / "logs").glob("*.log")):
            print(f"---- {log}\n{log.read_text(errors='replace')[-3000:]}")
        stop_net_grid(topo, home, pg)
        raise


def stop_net_grid(topo: Topology, home: Path, pg=None) -> list[str]:
    """Everything down and removed: the database first (a clean stop), then every process in the
    namespaces, the namespaces, and the grid's folders. Returns what could not be removed."""
    if pg is not None:
        try:
            stop_cluster(pg)
        except Exception:  # noqa: BLE001 - killed with its namespace below
            pass
    problems = topo.remove()
    remove_grid_dirs(home)
    return problems


def wait_gone(topo: Topology, n: int, timeout: float) -> float:
    """Until no process is left in worker n's namespace; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids_in(topo.worker_ns(n)):
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"worker namespace {topo.worker_ns(n)} still has processes {pids_in(topo.worker_ns(n))} "
                         f"{timeout:.0f} s after the heal")

"""The knobs a worker reads (agent, runner, sandbox), declared once.

The control plane's ServiceSettings inherits them, so the values it hands a worker at launch
(rgrid_service.fleet.launch) and the ones the worker reads (rgrid_runner.settings) are the same
fields with the same defaults.
"""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerKnobs(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RGRID_", extra="ignore")

    worker_id: str | None = None
    ray_address: str | None = None
    # Ray's dashboard (web UI, Jobs API) on the head and the full dashboard agent on every node.
    # The grid itself does not use them; off, each node runs lighter (rgrid_service.raynet).
    ray_dashboard: bool = False

    # Agent. The control plane's register answer carries the interval it expects.
    heartbeat_interval_seconds: float = 30.0
    dead_after_seconds: float = 120.0
    # How long a runner or agent rides out an API answering 503 (the database away behind it)
    # before it gives a run up. None: max(30, 3 x dead_after), since the control plane does not
    # declare workers dead because of its own database outage.
    api_outage_budget_seconds: float | None = None
    # How long a runner rides out an API it cannot reach at all (no connection, a timeout,
    # 502/504) before it kills the script and gives the run up. The orchestrator counts that
    # silence against dead_after and re-queues the run elsewhere, so this stays below it.
    # None: dead_after / 2.
    api_unreachable_budget_seconds: float | None = None

    # Runner timings and limits.
    log_flush_interval_seconds: float = 0.2
    lease_check_interval_seconds: float = 1.0
    log_limit_bytes: int = 10 * 1024 * 1024
    sandbox_memory_mb: int = 2048
    sandbox_max_processes: int = 256
    sandbox_max_file_mb: int = 8192
    # Niceness scripts run at. None keeps what the runner's Ray worker process has (Ray starts
    # them at 15), so the control plane and Ray's daemons come first when the CPUs are busy:
    # measured, 0 instead gave about 6 % less throughput on a 2-core local grid.
    sandbox_niceness: int | None = None
    work_root: str = "/tmp/rgrid-work"
    # The Docker engine scripts run in (e.g. unix:///run/docker.sock); unset: no Docker on this
    # worker, and python:3.11 runs in bubblewrap with the worker's own interpreter. Every catalogue
    # runtime's image comes from image_registry (rgrid_core.runtimes, rgrid_service.images).
    docker_host: str | None = None
    image_registry: str = "127.0.0.1:5000"
    # Verified inputs kept on the worker by content (sha256), so a script run again and again (a
    # batch) is fetched from the object store once per worker. 0 turns the cache off.
    input_cache_mb: int = 1024

    @property
    def outage_budget(self) -> float:
        if self.api_outage_budget_seconds is not None:
            return self.api_outage_budget_seconds
        return max(30.0, 3 * self.dead_after_seconds)

    @property
    def unreachable_budget(self) -> float:
        if self.api_unreachable_budget_seconds is not None:
            return self.api_unreachable_budget_seconds
        return min(self.outage_budget, self.dead_after_seconds / 2)

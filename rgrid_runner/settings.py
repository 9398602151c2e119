"""What a worker reads from its RGRID_* environment, and nothing more.

A worker holds the control plane's address and its own worker token: no database URL, no store
keys, no control-plane secret. Read once per process (rgrid_runner.task caches it): parsing the
environment again for every run cost more than a no-op script's whole run.
"""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RGRID_", extra="ignore")

    # The worker API (rgrid_core.workerwire) and this worker's token for it.
    api_url: str = "http://127.0.0.1:8000"
    worker_token: str = ""
    worker_id: str | None = None
    ray_address: str | None = None

    # Agent. The control plane's register answer carries the interval it expects; this is the
    # fallback until then.
    heartbeat_interval_seconds: float = 30.0
    dead_after_seconds: float = 120.0
    # How long a runner or agent rides out an unreachable API (connection errors, 502/503/504,
    # the database away behind it) before it gives a run up. None: max(30, 3 x dead_after), since
    # the control plane does not declare workers dead because of its own database outage.
    api_outage_budget_seconds: float | None = None
    # How long a runner rides out an API it cannot reach at all (no connection, a timeout,
    # 502/504) before it kills the script and gives the run up. The orchestrator counts that
    # silence against dead_after and re-queues the run elsewhere, so this stays below it.
    # None: dead_after / 2. Only 503 (the database away: nothing expires) gets the outage budget.
    api_unreachable_budget_seconds: float | None = None
    # One request's wait for the API's answer (a renew carrying logs included).
    api_timeout_seconds: float = 30.0

    # Runner timings and limits.
    log_flush_interval_seconds: float = 0.2
    lease_check_interval_seconds: float = 1.0
    log_limit_bytes: int = 10 * 1024 * 1024
    sandbox_memory_mb: int = 2048
    sandbox_max_processes: int = 256
    sandbox_max_file_mb: int = 8192
    # Niceness scripts run at; None keeps what the runner's Ray worker process has (see
    # rgrid_service.settings for the measurement).
    sandbox_niceness: int | None = None
    work_root: str = "/tmp/rgrid-work"
    # Verified inputs kept on the worker by sha256; 0 turns the cache off.
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

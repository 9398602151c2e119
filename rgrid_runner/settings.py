"""What a worker reads from its RGRID_* environment, and nothing more.

A worker holds the control plane's address and its own worker token: no database URL, no store
keys, no control-plane secret. Read once per process (rgrid_runner.task caches it): parsing the
environment again for every run cost more than a no-op script's whole run.
"""
from __future__ import annotations

from rgrid_core.workerknobs import WorkerKnobs


class WorkerSettings(WorkerKnobs):
    """WorkerKnobs (timings, limits, budgets) plus the worker's own address book and token."""

    # The worker API (rgrid_core.workerwire) and this worker's token for it.
    api_url: str = "http://127.0.0.1:8000"
    worker_token: str = ""
    # One request's wait for the API's answer (a renew carrying logs included).
    api_timeout_seconds: float = 30.0

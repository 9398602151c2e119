"""The Ray task the orchestrator dispatches: one execution on whichever worker node Ray picks.

Ray's own retries are off: re-queueing is the orchestrator's decision, never Ray's.
"""
from __future__ import annotations

from functools import lru_cache

import ray

from rgrid_core.constants import SLOT_RESOURCE

from .settings import WorkerSettings


@lru_cache(maxsize=1)
def worker_settings() -> WorkerSettings:
    """Read once per Ray worker process: its environment is fixed when the worker node starts,
    and parsing it again for every execution cost more than a no-op script's whole run."""
    return WorkerSettings()


@lru_cache(maxsize=1)
def worker_client():
    """One API client per Ray worker process, kept for its life: its connections stay open, so
    a run pays no connection set-up."""
    from .workerclient import WorkerClient

    return WorkerClient.for_settings(worker_settings())


@ray.remote(max_retries=0, num_cpus=0, resources={SLOT_RESOURCE: 1})
def execute(execution_id: str) -> str:
    from .runner import run_execution

    return run_execution(execution_id, worker_client(), worker_settings())

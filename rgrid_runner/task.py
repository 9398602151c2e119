"""The Ray task the orchestrator dispatches: one execution on whichever worker node Ray picks.

Ray's own retries are off: re-queueing is the orchestrator's decision, never Ray's.
"""
from __future__ import annotations

from functools import lru_cache

import ray

from rgrid_core.constants import SLOT_RESOURCE, WORKER_LABEL
from rgrid_service.settings import ServiceSettings


@lru_cache(maxsize=1)
def worker_settings() -> ServiceSettings:
    """Read once per Ray worker process: its environment is fixed when the worker node starts,
    and parsing it again for every execution cost more than a no-op script's whole run."""
    return ServiceSettings()


def current_worker_id(settings: ServiceSettings) -> str:
    """RGRID_WORKER_ID (set on the worker server), else the node's rgrid-worker label."""
    if settings.worker_id:
        return settings.worker_id
    labels = ray.get_runtime_context().get_node_labels()
    return labels.get(WORKER_LABEL) or ray.get_runtime_context().get_node_id()[:12]


@ray.remote(max_retries=0, num_cpus=0, resources={SLOT_RESOURCE: 1})
def execute(execution_id: str) -> str:
    from .runner import run_execution

    settings = worker_settings()
    return run_execution(execution_id, current_worker_id(settings), settings)

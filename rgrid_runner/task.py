"""The Ray task the orchestrator dispatches: one execution on whichever worker node Ray picks.

Ray's own retries are off: re-queueing is the orchestrator's decision, never Ray's.
"""
from __future__ import annotations

import os

import ray


def current_worker_id() -> str:
    wid = os.environ.get("RGRID_WORKER_ID")
    if wid:
        return wid
    labels = ray.get_runtime_context().get_node_labels()
    return labels.get("rgrid-worker") or ray.get_runtime_context().get_node_id()[:12]


@ray.remote(max_retries=0, num_cpus=0, resources={"rgrid_slot": 1})
def execute(execution_id: str) -> str:
    from rgrid_service.settings import ServiceSettings

    from .runner import run_execution

    return run_execution(execution_id, current_worker_id(), ServiceSettings())

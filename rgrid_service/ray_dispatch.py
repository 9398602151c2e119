"""The Ray side of dispatch: a detached actor on the head node that owns the runner tasks.

Ray kills the tasks a driver owns when that driver exits. The orchestrator is a driver, and
restarting it must not kill running executions, so the tasks are submitted by this detached actor
instead: it outlives any orchestrator process, and a new orchestrator simply finds it by name.
"""
from __future__ import annotations

import importlib
import logging

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rgrid_core.constants import DISPATCHER_NAME, RAY_NAMESPACE, RUNNER_TASK

log = logging.getLogger("rgrid.dispatch")


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1)
class DispatchActor:
    def __init__(self):
        self.inflight: dict = {}  # ObjectRef -> execution id

    def dispatch(self, assignments: list[tuple[str, str]]) -> int:
        """Start one runner task per (execution id, Ray node id), pinned to that node."""
        execute = runner_task()
        for execution_id, node_id in assignments:
            ref = execute.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            ).remote(execution_id)
            self.inflight[ref] = execution_id
        return len(assignments)

    def reap(self) -> list[tuple[str, str]]:
        """(execution id, what the runner reported or the error) for every finished task."""
        if not self.inflight:
            return []
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        results = []
        for ref in done:
            execution_id = self.inflight.pop(ref)
            try:
                results.append((execution_id, str(ray.get(ref))))
            except Exception as e:  # noqa: BLE001 - the execution's state is the DB's business
                results.append((execution_id, f"task error: {type(e).__name__}: {e}"[:300]))
        return results


def runner_task():
    """The runner's Ray task, resolved by name in the actor's process (see RUNNER_TASK)."""
    module, _, name = RUNNER_TASK.partition(":")
    return getattr(importlib.import_module(module), name)


def get_dispatcher():
    """The running dispatcher actor, created on the head node if there is none."""
    return DispatchActor.options(
        name=DISPATCHER_NAME,
        namespace=RAY_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={"node:__internal_head__": 0.001},
    ).remote()

"""The Ray side of dispatch: a detached actor on the head node that hands runs to the workers'
runners.

Ray ties what a driver starts to that driver. The orchestrator is a driver, and restarting it must
not kill running executions, so the runs are sent by this detached actor instead: it outlives any
orchestrator process, and a new orchestrator simply finds it by name.

Each worker node has one runner, a detached actor pinned to that node (rgrid_runner.task), made
here when the orchestrator first sees the node, and found again by its name after a restart of
this actor. A run is one call on its node's runner.
"""
from __future__ import annotations

import importlib
import logging

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rgrid_core.constants import DISPATCHER_NAME, RAY_NAMESPACE, RUNNER_ACTOR, RUNNER_NAME_PREFIX

log = logging.getLogger("rgrid.dispatch")


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1)
class DispatchActor:
    def __init__(self):
        self.inflight: dict = {}  # ObjectRef -> (execution id, Ray node id)
        self.runners: dict = {}  # Ray node id -> that node's runner

    def dispatch(self, assignments: list[tuple[str, str, int]]) -> int:
        """Send each (execution id, Ray node id, the node's slots) to that node's runner."""
        for execution_id, node_id, slots in assignments:
            ref = self._runner(node_id, slots).execute.remote(execution_id)
            self.inflight[ref] = (execution_id, node_id)
        return len(assignments)

    def prepare(self, nodes: list[tuple[str, int]]) -> int:
        """Make the runner of every (live Ray node id, slots) not seen yet, so a new worker's first
        run does not wait for its runner's process to start; let go of the runners of nodes that
        are gone. Returns how many runners are held."""
        live = {node_id for node_id, _ in nodes}
        for node_id in [n for n in self.runners if n not in live]:
            handle = self.runners.pop(node_id)
            try:
                ray.kill(handle, no_restart=True)  # its node is gone: it must not be started again elsewhere
            except Exception:  # noqa: BLE001 - already dead with its node
                pass
        for node_id, slots in nodes:
            self._runner(node_id, slots)
        return len(self.runners)

    def reap(self) -> list[tuple[str, str]]:
        """(execution id, what the runner reported or the error) for every finished run."""
        if not self.inflight:
            return []
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        results = []
        for ref in done:
            execution_id, node_id = self.inflight.pop(ref)
            try:
                results.append((execution_id, str(ray.get(ref))))
            except Exception as e:  # noqa: BLE001 - the execution's state is the DB's business
                if isinstance(e, ray.exceptions.ActorDiedError):
                    self.runners.pop(node_id, None)  # found again (or made anew) by name on the next run
                results.append((execution_id, f"task error: {type(e).__name__}: {e}"[:300]))
        return results

    def _runner(self, node_id: str, slots: int):
        handle = self.runners.get(node_id)
        if handle is None:
            handle = self.runners[node_id] = runner_on(node_id, slots)
        return handle


def runner_on(node_id: str, slots: int):
    """The runner of a Ray node, made on it if it has none: one thread per slot."""
    module, _, name = RUNNER_ACTOR.partition(":")
    actor_class = getattr(importlib.import_module(module), name)
    return actor_class.options(
        name=RUNNER_NAME_PREFIX + node_id,
        namespace=RAY_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=max(1, slots),
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote()


def get_dispatcher():
    """The running dispatcher actor, created on the head node if there is none."""
    return DispatchActor.options(
        name=DISPATCHER_NAME,
        namespace=RAY_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={"node:__internal_head__": 0.001},
    ).remote()

"""The Ray side of dispatch: each worker node's runner, and the calls that hand it runs.

Each worker node has one runner, a detached actor pinned to that node (rgrid_runner.task). The
orchestrator makes it when it first sees the node and calls it once per run. Detached, so it
belongs to no driver: restarting the orchestrator (a Ray driver) neither kills it nor the runs it
holds, and a new orchestrator finds it again by its name. Ray ends a driver's tasks when the driver
exits, which is why runs were once sent through a detached dispatch actor; the runner is detached
and a run it is running goes on when the orchestrator dies (chaos scenario 6), so the orchestrator
now calls the runner itself, one hop fewer per run.
"""
from __future__ import annotations

import importlib

from rgrid_core.constants import RAY_NAMESPACE, RUNNER_ACTOR, RUNNER_NAME_PREFIX


class Runners:
    """The orchestrator's handles on the workers' runners and the runs it has sent them."""

    def __init__(self):
        self.handles: dict = {}  # Ray node id -> that node's runner
        self.inflight: dict = {}  # ObjectRef -> (execution id, Ray node id)

    def send(self, assignments: list[tuple[str, str, int]]) -> None:
        """Send each (execution id, Ray node id, the node's slots) to that node's runner."""
        for execution_id, node_id, slots in assignments:
            ref = self._runner(node_id, slots).execute.remote(execution_id)
            self.inflight[ref] = (execution_id, node_id)

    def prepare(self, nodes: list[tuple[str, int]]) -> None:
        """Make the runner of every (live Ray node id, slots) not seen yet, so a new worker's first
        run does not wait for its runner's process to start; end the runners of nodes gone (one
        pinned to a dead node must not wait to be started again)."""
        import ray

        live = {node_id for node_id, _ in nodes}
        # Only a node Ray no longer has alive loses its runner. The list given holds one node per
        # worker, so a worker's restarted node and its old one (alive in the GCS until its health
        # check fails) are not both in it, and the one left out may still be running runs.
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")} if set(self.handles) - live else set()
        for node_id in [n for n in self.handles if n not in live and n not in alive]:
            try:
                ray.kill(self.handles.pop(node_id), no_restart=True)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
        for node_id, slots in nodes:
            self._runner(node_id, slots)

    def reap(self) -> list[tuple[str, str, bool]]:
        """(execution id, what the runner reported or the error, whether its runner died) for
        every finished call. A call whose runner died may never have started its run."""
        import ray

        if not self.inflight:
            return []
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        results = []
        for ref in done:
            execution_id, node_id = self.inflight.pop(ref)
            try:
                results.append((execution_id, str(ray.get(ref)), False))
            except Exception as e:  # noqa: BLE001 - the execution's state is the DB's business
                died = isinstance(e, ray.exceptions.RayActorError)
                if isinstance(e, ray.exceptions.ActorDiedError):
                    self.handles.pop(node_id, None)  # found again (or made anew) by name on its next run
                results.append((execution_id, f"runner error: {type(e).__name__}: {e}"[:300], died))
        return results

    def _runner(self, node_id: str, slots: int):
        handle = self.handles.get(node_id)
        if handle is None:
            handle = self.handles[node_id] = runner_on(node_id, slots)
        return handle


def runner_on(node_id: str, slots: int):
    """The runner of a Ray node, made on it if it has none: one thread per slot."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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

"""The runner on each worker node: one Ray actor per node that runs the executions dispatched to it.

One actor, not a Ray task per run: a task asks the node's raylet for a lease and a worker process
every time (about 3 ms of CPU per run across its caller, the raylets and the worker, and
a burst made the raylet start spare worker processes that did nothing), while an actor call goes
straight to a process that is already there (0.3 ms). The actor runs a call per thread, at most as
many at once as the node has slots (`max_concurrency`), so a run dispatched ahead waits in the
actor's queue until a slot frees, as it waited for a slot resource before.

Ray never retries a run (`max_task_retries=0`): re-queueing is the orchestrator's decision. Ray
starts the actor again, on the same node, if its process dies; the runs it was running come back
through lease expiry, those queued in it at the orchestrator's next reap.
"""
from __future__ import annotations

from functools import lru_cache

import ray

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


class Runner:
    """The node's runner: `execute` runs one execution and returns what happened (for the
    orchestrator's log). Calls run on the actor's threads; run_execution keeps no per-run state
    outside its own frame, so runs on one node run side by side."""

    def __init__(self):
        # Made here, before any call: the first runs start on several threads at once, and
        # lru_cache does not keep two of them from each making a client.
        worker_settings()  # a broken environment shows at creation, not in the first run
        worker_client()

    def execute(self, execution_id: str) -> str:
        from .runner import run_execution

        return run_execution(execution_id, worker_client(), worker_settings())


RunnerActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(Runner)

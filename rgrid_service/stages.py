"""A run's stages and when it reached each: the timeline `rgrid status` shows.

    queued        executions.queued_at          submit verified the inputs (or a re-queue)
    provisioning  executions.provisioning_at    the fleet asked for workers while it waited
    dispatched    executions.dispatched_at      placed on a worker
    staging       execution_attempts.started_at the runner claimed it and fetches its inputs
    running       execution_attempts.running_at the script started
    uploading     execution_attempts.uploading_at its outputs are going up
    finished      executions.finished_at

Every time is the database's. A stage older than the run's (latest) queueing belongs to an earlier
attempt and is left out, so a re-queued run's timeline starts again at its new `queued`; the
attempts keep the history.
"""
from __future__ import annotations

from datetime import datetime

STAGES = ("queued", "provisioning", "dispatched", "staging", "running", "uploading", "finished")
BEFORE_QUEUED = "created"  # the client is still uploading the inputs


def timeline(ex, attempt=None) -> list[tuple[str, datetime]]:
    """(stage, time) for every stage the run has reached, in stage order. `ex` is an execution row,
    `attempt` its current attempt's row (or None before the first claim)."""
    times: dict[str, datetime | None] = {
        "queued": ex.queued_at,
        "provisioning": ex.provisioning_at,
        "dispatched": ex.dispatched_at,
        "staging": getattr(attempt, "started_at", None),
        "running": getattr(attempt, "running_at", None),
        "uploading": getattr(attempt, "uploading_at", None),
        "finished": ex.finished_at,
    }
    since = ex.queued_at
    return [(stage, at) for stage, at in times.items()
            if at is not None and (since is None or stage in ("queued", "finished") or at >= since)]


def current_stage(steps: list[tuple[str, datetime]]) -> str:
    """The stage the run is in: the last one it reached."""
    return steps[-1][0] if steps else BEFORE_QUEUED

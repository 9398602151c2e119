"""Execution statuses, worker states and the transitions allowed between worker states.

Values are plain strings (StrEnum), so they compare equal to what the database and the JSON API
carry.
"""
from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    UPLOADING = "uploading"  # created; inputs not yet uploaded and verified
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    LOST = "lost"  # attempts exhausted by worker deaths


TERMINAL = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT,
                      ExecutionStatus.CANCELED, ExecutionStatus.LOST})
# Statuses whose outputs may exist and are worth downloading.
WITH_OUTPUTS = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT})
# Lifecycle order, for displays that list counts per status.
STATUS_ORDER = tuple(ExecutionStatus)


class WorkerState(StrEnum):
    REQUESTED = "requested"  # in the desired set; the provider has not created its server yet
    BOOTING = "booting"  # the server exists; its agent has not sent a first heartbeat
    ACTIVE = "active"  # heartbeating; takes runs
    DRAINING = "draining"  # takes no new runs; retired once its runs end
    DELETING = "deleting"  # left the desired set; the provider is deleting its server
    DELETED = "deleted"
    DEAD = "dead"  # declared dead (silent past dead_after, or its Ray node died); its runs re-queued


W = WorkerState
# The one table of allowed worker transitions: state -> the states it may move to.
WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    W.REQUESTED: frozenset({W.BOOTING, W.ACTIVE, W.DELETING, W.DEAD}),
    W.BOOTING: frozenset({W.ACTIVE, W.DELETING, W.DEAD}),
    W.ACTIVE: frozenset({W.DRAINING, W.DELETING, W.DEAD}),
    W.DRAINING: frozenset({W.ACTIVE, W.DELETING, W.DEAD}),
    W.DELETING: frozenset({W.DELETED, W.DEAD}),
    W.DEAD: frozenset({W.DELETING, W.DELETED}),
    W.DELETED: frozenset(),
}
del W
# Workers whose server exists or is being created: the provider keeps these.
LIVE_WORKER_STATES = frozenset({WorkerState.REQUESTED, WorkerState.BOOTING, WorkerState.ACTIVE,
                                WorkerState.DRAINING})


def can_move(src: str, dst: str) -> bool:
    """Whether a worker may go from state src to state dst (the same state is always allowed)."""
    return src == dst or WorkerState(dst) in WORKER_TRANSITIONS[WorkerState(src)]


def sources_of(dst: WorkerState) -> tuple[str, ...]:
    """Every state a worker may move to dst from: the WHERE clause of a guarded UPDATE."""
    return tuple(s.value for s, targets in WORKER_TRANSITIONS.items() if dst in targets)

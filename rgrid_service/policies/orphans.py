"""What happens to a run whose worker died or whose runner stopped renewing its lease."""
from __future__ import annotations

from dataclasses import dataclass

from rgrid_core.states import ExecutionStatus


@dataclass(frozen=True)
class Orphan:
    execution_id: str
    attempt: int
    max_attempts: int


def orphan_outcome(orphan: Orphan) -> ExecutionStatus:
    """Queued again while attempts remain, else lost."""
    return ExecutionStatus.QUEUED if orphan.attempt < orphan.max_attempts else ExecutionStatus.LOST

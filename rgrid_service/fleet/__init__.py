"""Fleet providers: turn the orchestrator's decisions into servers (local processes or Hetzner)."""
from __future__ import annotations

from typing import Protocol


class FleetProvider(Protocol):
    """The one small interface every provider implements."""

    def create(self) -> str:
        """Start one new worker server; returns its worker id."""

    def delete(self, worker_id: str) -> None:
        """Delete a worker server (idempotent)."""

"""The local provider: a "server" is a process group holding a Ray worker node and its agent."""
from __future__ import annotations

from pathlib import Path

from ..localgrid import grid


class LocalProvider:
    def __init__(self, home: Path):
        self.home = home

    def _state(self) -> grid.GridState:
        state = grid.load_state(self.home)
        if state is None:
            raise RuntimeError(f"No local grid state in {self.home}.")
        return state

    def create(self) -> str:
        state = self._state()
        worker_id = grid.new_worker_id(state)
        grid.start_worker(state, grid.service_env_for(state), worker_id)
        return worker_id

    def delete(self, worker_id: str) -> None:
        state = self._state()
        pid = state.pids.pop(worker_id, None)
        if pid:
            grid.stop_groups([pid], grace=2)
        state.save()

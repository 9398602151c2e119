"""One runner per run on a worker (runner.RunLock): a duplicate task for a run whose runner is
still at work on this worker returns "not-claimed" without asking the control plane, since the
control plane would answer it the first runner's claim again."""
from __future__ import annotations

from rgrid_runner.runner import RunLock, run_execution
from rgrid_runner.settings import WorkerSettings


class NoClaims:
    def claim(self, execution_id):  # noqa: ARG002
        raise AssertionError("a duplicate runner must not claim")


def test_a_second_runner_of_the_same_run_on_this_worker_does_not_claim(tmp_path):
    settings = WorkerSettings(_env_file=None, work_root=str(tmp_path), worker_id="w-1")
    with RunLock(tmp_path, "ex-1", "w-1") as held:
        assert held
        assert run_execution("ex-1", NoClaims(), settings) == "not-claimed"
        with RunLock(tmp_path, "ex-2", "w-1") as other:  # another run is not held back
            assert other
        # Nor is the same run on another worker sharing the work root (the local grid's): a
        # frozen worker's runner must not keep the run from the worker it moved to.
        with RunLock(tmp_path, "ex-1", "w-2") as elsewhere:
            assert elsewhere
    assert not list(tmp_path.glob("*.lock"))
    with RunLock(tmp_path, "ex-1", "w-1") as again:  # once the first is done, the run's lock is free
        assert again

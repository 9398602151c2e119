"""Chaos scenario 10 (issue #11): a real network partition.

Every host is a network namespace the suite creates and removes (tests/chaos/netns.py): the control
plane's (PostgreSQL, SeaweedFS, the Ray head, the API, the orchestrator) and one per worker, joined
by veth pairs, with no route out. One worker is cut off from the control plane for longer than
dead_after while its script keeps running, then healed. The run must re-run elsewhere once; the
cut-off worker's late writes must be refused (fenced) and none of its outputs taken. Timings are the
chaos grid's (heartbeat 1 s, dead_after 5 s, sweep 1 s).
"""
from __future__ import annotations

import shutil
import time
from datetime import datetime

import pytest
from sqlalchemy import select

from rgrid_service.db.models import Execution, ExecutionAttempt, ExecutionOutput, LogChunk, Worker

from tests.conftest import missing

from .conftest import DEAD_AFTER, HEARTBEAT, SWEEP
from .invariants import check
from .netgrid import NetGrid, start_net_grid, stop_net_grid, wait_gone
from .netns import unavailable, worker_ip

pytestmark = [pytest.mark.grid, pytest.mark.postgres]

WORKERS = 3

# Logs a line every 0.2 s (so the cut-off runner has writes to make), then writes an output file and
# the attempt stamp the checker reads.
PARTITIONED = (
    "import os, sys, time\n"
    "end = time.time() + float(sys.argv[1])\n"
    "while time.time() < end:\n"
    "    print('tick', os.environ['RGRID_ATTEMPT'], flush=True)\n"
    "    time.sleep(0.2)\n"
    "open('result.txt', 'w').write('result of attempt ' + os.environ['RGRID_ATTEMPT'])\n"
    "open('attempt.txt', 'w').write(os.environ['RGRID_EXECUTION_ID'] + ' ' + os.environ['RGRID_ATTEMPT'])\n"
)


@pytest.fixture(scope="module")
def net_grid():
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    why = unavailable()
    if why:
        missing("network namespaces", why)
    started = time.monotonic()
    grid = start_net_grid(WORKERS)
    try:
        grid.wait_for_workers(WORKERS)
        print(f"\npartition grid up in {time.monotonic() - started:.0f} s at {grid.home} "
              f"(namespaces {', '.join(grid.topo.all())})")
        yield grid
    finally:
        problems = stop_net_grid(grid.topo, grid.home, grid.pg)
        assert not problems, f"the partition grid was not removed cleanly: {problems}"


def test_10_network_partition_past_dead_after_then_healed(net_grid: NetGrid):
    grid = net_grid
    started = time.monotonic()
    ex_id = grid.submit(PARTITIONED, ["10"])
    running = grid.wait_status(ex_id, ("running",), timeout=60)
    victim = running["worker_id"]
    n = grid.worker_ns[victim]
    time.sleep(1)  # it has logged a few lines as attempt 1
    fault_at = grid.db_now()
    cut = time.monotonic()
    grid.topo.cut(n)

    second = grid.wait_status(ex_id, ("running", "succeeded"), timeout=60, where=lambda e: e["attempt"] >= 2)
    rerun_after = time.monotonic() - cut
    assert second["worker_id"] != victim, second
    # Cut for longer than dead_after, and at least until the re-run started.
    time.sleep(max(0.0, DEAD_AFTER + 3 - (time.monotonic() - cut)))
    assert pids_left(grid, n), f"{victim} ended by itself while cut off"
    script_running = time.monotonic() - cut < 10  # the script was started ~1 s before the cut
    api_offset = grid.api_log_offset()
    healed_at = grid.db_now()
    healed = time.monotonic()
    healed_wall = datetime.now()  # the agent's log lines carry local wall-clock times
    grid.topo.heal(n)

    # The cut-off worker learns it was declared dead and takes itself down.
    gone = wait_gone(grid.topo, n, 60)
    agent_log = grid._log(f"{victim}.log")
    assert f"{victim} was given up by the control plane" in agent_log, agent_log[-3000:]
    time.sleep(2)  # anything still in flight from it has landed by now

    done = grid.wait_all([ex_id], timeout=120)[ex_id]
    assert done["status"] == "succeeded" and done["attempt"] == 2 and done["worker_id"] != victim, done
    rep = check(grid.engine(), [ex_id], scenario="10 network partition past dead_after, then healed",
                faults=f"{victim}'s link to the control plane down for {healed - cut:.1f} s "
                       f"({'its script still running' if script_running else 'its script had ended'} at the heal)",
                dead_after=DEAD_AFTER, sweep=SWEEP, heartbeat=HEARTBEAT, fault_at=fault_at, store=grid.store())
    with grid.engine().connect() as conn:
        tries = conn.execute(select(ExecutionAttempt.attempt, ExecutionAttempt.worker_id, ExecutionAttempt.outcome,
                                    ExecutionAttempt.started_at, ExecutionAttempt.finished_at)
                             .where(ExecutionAttempt.execution_id == ex_id).order_by(ExecutionAttempt.attempt)).all()
        chunks = conn.execute(select(LogChunk.attempt, LogChunk.created_at)
                              .where(LogChunk.execution_id == ex_id)).all()
        outputs = conn.execute(select(ExecutionOutput.attempt, ExecutionOutput.path)
                               .where(ExecutionOutput.execution_id == ex_id)).all()
        state = conn.execute(select(Worker.state).where(Worker.id == victim)).scalar_one()
        redispatched = conn.execute(select(Execution.dispatched_at).where(Execution.id == ex_id)).scalar_one()
    # Re-run elsewhere exactly once.
    assert [(t.attempt, t.worker_id, t.outcome) for t in tries] == [
        (1, victim, "lost"), (2, done["worker_id"], "succeeded")], tries
    assert state == "dead"
    # Nothing of attempt 1 taken after the heal: no log line, no output row, no object in the store.
    first = [c for c in chunks if c.attempt == 1]
    assert first, "attempt 1 logged nothing before it was cut off"
    assert not [c for c in first if c.created_at >= healed_at], "attempt 1 logged after the heal"
    assert sorted(o.path for o in outputs) == ["attempt.txt", "result.txt"] and {o.attempt for o in outputs} == {2}
    store = grid.store()
    leftovers = list(store.client.list_objects(store.bucket, prefix=f"executions/{ex_id}/outputs/a1/", recursive=True))
    assert not leftovers, [o.object_name for o in leftovers]
    result = store.client.get_object(store.bucket, f"executions/{ex_id}/outputs/a2/result.txt")
    try:
        assert result.read() == b"result of attempt 2"
    finally:
        result.close()
        result.release_conn()

    # What the cut-off worker asked the control plane after the heal, and what it was answered
    # (the API's access log, by the worker's address).
    asked = grid.api_requests_from(worker_ip(n), api_offset)
    assert asked, "the cut-off worker asked the API nothing after the heal (see api.log)"
    accepted = [(line, code) for line, code in asked if code < 400]
    assert not accepted, f"the API took requests of the cut-off worker after the heal: {accepted}"
    late = [(line, code) for line, code in asked if f"/runs/{ex_id}/attempts/1/" in line]
    assert late, f"attempt 1's runner made no write after the heal, only {asked}"
    refused = ", ".join(sorted({f"{line.split()[0]} {line.split()[1].replace(ex_id, 'ID')} -> {code}"
                                for line, code in asked}))
    told = said_at(agent_log, f"{victim} was given up by the control plane")
    if told is not None:
        rep.notes.append(f"heal -> its agent told it was declared dead {(told - healed_wall).total_seconds():.1f} s")
    lost_at = tries[0].finished_at
    rep.notes.append(f"cut -> attempt 1 declared lost {(lost_at - fault_at).total_seconds():.1f} s -> dispatched "
                     f"again {(redispatched - fault_at).total_seconds():.1f} s -> attempt 2 started "
                     f"{(tries[1].started_at - fault_at).total_seconds():.1f} s (database clock)")
    rep.notes.append(f"cut -> attempt 2 seen running {rerun_after:.1f} s; heal -> cut-off worker gone "
                     f"{gone - healed:.1f} s; after the heal it was refused: {refused}; attempt 1: "
                     f"{len(first)} log chunks, all before the heal, no outputs, nothing under a1/ in the store")
    print(f"\n{rep.line()}; scenario wall time {time.monotonic() - started:.0f} s", flush=True)


def said_at(log_text: str, sentence: str) -> datetime | None:
    """When the last log line holding sentence was written (its leading asctime), if it has one."""
    for line in reversed(log_text.splitlines()):
        if sentence in line:
            try:
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                return None
    return None


def pids_left(grid: NetGrid, n: int) -> bool:
    from .netns import pids_in

    return bool(pids_in(grid.topo.worker_ns(n)))

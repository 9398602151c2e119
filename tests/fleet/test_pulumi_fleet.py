"""The elastic fleet on the real Pulumi engine, real Ray nodes and the local Hetzner API.

The scenarios run in order on one grid (the fleet each leaves behind is where the next starts).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.chaos.conftest import signal_server
from tests.gridctl import restart

from tests.conftest import wait_until

from .conftest import BILLING_PERIOD, MAX_WORKERS, RETIRE_MARGIN, FleetGrid, log_tail

SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept', sys.argv[1])\n"


class Watch(threading.Thread):
    """Samples the live worker records and the cloud's servers while a scenario runs."""

    def __init__(self, grid: FleetGrid):
        super().__init__(daemon=True)
        self.grid, self.stop, self.max_live, self.max_servers, self.seen = grid, threading.Event(), 0, 0, set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                live = self.grid.live()
                servers = self.grid.worker_servers()
                self.max_live = max(self.max_live, len(live))
                self.max_servers = max(self.max_servers, len(servers))
                self.seen |= set(live)
            except Exception:  # noqa: BLE001 - a sample lost to a busy database is no finding
                pass
            time.sleep(0.3)


@pytest.fixture(autouse=True)
def cloud_restored(fleet_grid: FleetGrid):
    """A scenario that fails leaves the cloud as it found it (no faults, no server limit), so the
    scenarios after it start from a working cloud and fail only for their own reasons."""
    yield
    fleet_grid.clear_faults()
    with fleet_grid.cloud as c:
        c.put("/_standin/config", json={"max_servers": None}).raise_for_status()


def converged(grid: FleetGrid) -> bool:
    """The cloud's servers are exactly the stack's, and exactly the live records'."""
    stack = grid.stack_servers()
    cloud = {w: str(s["id"]) for w, s in grid.worker_servers().items()}
    return stack == cloud and set(cloud) == set(grid.live())


def wait_converged(grid: FleetGrid, timeout: float, what: str = "the stack and the cloud to agree") -> None:
    try:
        wait_until(lambda: converged(grid), timeout, what, step=1)
    except AssertionError as e:
        cloud = {w: (s["id"], s["status"]) for w, s in grid.worker_servers().items()}
        raise AssertionError(f"{e}: stack {grid.stack_servers()}, cloud {cloud}, live records "
                             f"{ {w: r['state'] for w, r in grid.live().items()} }\n"
                             f"{log_tail(grid, 'orchestrator.log', 6000)}") from None


def unsuccessful(grid: FleetGrid, done: dict[str, dict]) -> str:
    """Each run that did not succeed, with its reason and its log's end; then the orchestrator's log."""
    lines = []
    with grid.api() as api:
        for ex_id, ex in done.items():
            if ex["status"] != "succeeded":
                logs = api.get(f"/v1/executions/{ex_id}/logs").text[-1500:]
                lines.append(f"{ex_id} {ex['status']} exit {ex.get('exit_code')}: {ex.get('reason')}\n{logs}")
    return "\n".join(lines) + "\n" + log_tail(grid, "orchestrator.log")


def test_1_twenty_queued_runs_make_exactly_ten_workers(fleet_grid: FleetGrid):
    watch = Watch(fleet_grid)
    watch.start()
    ids = [fleet_grid.submit(SLEEP, ["8"]) for _ in range(20)]
    try:
        done = fleet_grid.wait_all(ids, timeout=900)
    finally:
        watch.stop.set()
        watch.join()
    assert {ex["status"] for ex in done.values()} == {"succeeded"}, unsuccessful(fleet_grid, done)
    assert watch.max_live == MAX_WORKERS and watch.max_servers == MAX_WORKERS
    assert len(watch.seen) == MAX_WORKERS, f"workers seen: {sorted(watch.seen)}"
    # Each decision says why; together they asked for exactly ten (the queue grew while runs were
    # being submitted, so there may be more than one).
    decisions = [e["message"] for e in fleet_grid.events() if e["kind"] == "decision" and "requested" in e["message"]]
    asked = [w for m in decisions for w in m.split(":")[0].removeprefix("requested ").split(", ")]
    assert len(asked) == MAX_WORKERS and all("queued against" in m for m in decisions), decisions
    wait_converged(fleet_grid, 120, "the stack and the cloud to agree")
    # Every run paid its share of a cx23's paid periods, and the operator's spend per clock hour
    # holds exactly those shares as the runs' part, beside the idle rest.
    priced = wait_until(lambda: (lambda v: v if all(ex["cost_eur"] for ex in v) else None)(
        [fleet_grid.execution(i) for i in ids]), 60, "every run to be priced")
    with fleet_grid.api() as api:  # the local grid's key is an operator's
        spend = api.get("/v1/fleet/costs", params={"hours": 3}).json()
    runs_total = sum(ex["cost_eur"] for ex in priced)
    assert spend["runs_eur"] == pytest.approx(runs_total, rel=1e-6), spend
    assert spend["spend_eur"] >= MAX_WORKERS * spend["prices"]["cx23"] and spend["idle_eur"] > 0
    assert any(h["spend_eur"] > 0 and h["runs_eur"] > 0 for h in spend["hours"]), spend


def test_2_killed_workers_are_deleted_through_the_stack_and_replaced(fleet_grid: FleetGrid):
    # Long enough that the queue still needs workers once the deaths are declared.
    ids = [fleet_grid.submit(SLEEP, ["12"], batch_id="b-kill") for _ in range(100)]
    wait_until(lambda: sum(1 for i in ids[:30] if fleet_grid.status(i) == "succeeded") >= 10, 600,
               "10 runs to succeed")
    wait_until(lambda: len([r for r in fleet_grid.live().values() if r["state"] == "active"]) >= 3, 300,
               "three active workers")
    active = sorted(w for w, r in fleet_grid.live().items() if r["state"] == "active")
    victims = active[:2]
    servers = fleet_grid.worker_servers()
    for w in victims:
        assert signal_server(servers[w]["pgid"], signal.SIGKILL) >= 2
    done = fleet_grid.wait_all(ids, timeout=900)
    assert {ex["status"] for ex in done.values()} == {"succeeded"}
    assert all(sum(1 for a in ex["attempts"] if a["outcome"] == "succeeded") == 1 for ex in done.values())
    records = wait_until(lambda: (lambda r: r if all(r[w]["state"] == "dead" and w not in fleet_grid.worker_servers()
                                                     for w in victims) else None)(fleet_grid.workers()),
                         120, "both dead servers to be deleted")
    for w in victims:
        assert records[w]["dead_reason"], records[w]
    assert not set(victims) & set(fleet_grid.stack_servers())
    newer = [w for w, r in fleet_grid.workers().items() if int(w[2:]) > max(int(v[2:]) for v in active)]
    assert newer, "no replacement was requested"
    wait_until(lambda: any(fleet_grid.workers()[w]["state"] in ("active", "draining", "deleting", "deleted")
                           for w in newer), 300, "a replacement to boot")
    wait_converged(fleet_grid, 120, "the stack and the cloud to agree")


def test_3_idle_workers_retire_at_their_billing_boundary_and_a_busy_one_stays(fleet_grid: FleetGrid):
    # Every worker left idle by the scenarios before is retired in the last RETIRE_MARGIN seconds
    # of its paid period, never earlier.
    wait_until(lambda: not fleet_grid.live(), BILLING_PERIOD * 2 + 60, "every idle worker to be retired", step=1)
    # (A draining worker that got work while runs were queued is kept instead: not a drain.)
    drains = [e for e in fleet_grid.events() if e["message"].endswith(": draining")]
    assert drains
    for e in drains:
        left = float(e["message"].split(" with ")[1].split(" s left")[0])
        assert 0 <= left <= RETIRE_MARGIN, e["message"]
    wait_converged(fleet_grid, 120, "the last retired servers to be deleted")
    # One worker for one run; when its paid period nears its end it gets a run that spans the
    # boundary: it stays into the next period.
    first = fleet_grid.submit(SLEEP, ["1"])
    fleet_grid.wait_all([first], timeout=300)
    worker = fleet_grid.execution(first)["worker_id"]
    created = fleet_grid.workers()[worker]["created_at"]
    age = lambda: (fleet_grid.db_now() - created).total_seconds()  # noqa: E731
    wait_until(lambda: age() >= BILLING_PERIOD - RETIRE_MARGIN - 8, BILLING_PERIOD, "the worker to near its boundary")
    assert fleet_grid.workers()[worker]["state"] == "active"
    busy = fleet_grid.submit(SLEEP, ["35"])
    wait_until(lambda: age() >= BILLING_PERIOD + 5, BILLING_PERIOD, "the boundary to pass")
    assert fleet_grid.workers()[worker]["state"] == "active", fleet_grid.workers()[worker]
    assert fleet_grid.wait_all([busy], timeout=120)[busy]["status"] == "succeeded"
    assert fleet_grid.execution(busy)["worker_id"] == worker


def test_4_quota_5xx_and_hangs_are_survived_recorded_and_converge(fleet_grid: FleetGrid):
    # Quota: the cloud refuses new servers; the reason is recorded and shown by `local status`.
    # (Servers of retired workers must be gone first, or deleting them would make room.)
    wait_converged(fleet_grid, 120, "the stack and the cloud to agree")
    with fleet_grid.cloud as c:
        c.put("/_standin/config", json={"max_servers": len(fleet_grid.worker_servers())}).raise_for_status()
    # Scripts with no history are not expected to end soon, so they cannot all be handed ahead to
    # the workers there are: new servers are wanted, and refused.
    ids = [fleet_grid.submit(SLEEP, ["3"], name=f"quota-{uuid.uuid4().hex[:8]}.py") for _ in range(4)]
    wait_until(lambda: any(e["kind"] == "error" and e["message"].startswith("Worker limit reached")
                           for e in fleet_grid.events()), 120, "the quota error to be recorded")
    status = subprocess.run([sys.executable, "-m", "rgrid_service.localgrid", "status", "--home", str(fleet_grid.home),
                             "--json"], capture_output=True, text=True, timeout=60)
    assert "Worker limit reached. Upgrade account or wait for workers to free up." in status.stdout
    metrics = fleet_grid.orchestrator_metrics()
    assert metrics[("rgrid_provider_errors_total", (("kind", "quota"),))] >= 1, metrics
    assert metrics[("rgrid_fleet_update_duration_seconds_count", (("result", "error"),))] >= 1
    # Then the cloud answers 5xx to creates (the provider's own retries give up too): recorded as
    # a sentence, retried with back-off; once it answers again, everything goes through.
    fleet_grid.fault(kind="5xx", match="^POST /v1/servers$")
    with fleet_grid.cloud as c:
        c.put("/_standin/config", json={"max_servers": None}).raise_for_status()
    wait_until(lambda: any(e["kind"] == "error" and e["message"].startswith("Cloud provider error. Retrying...")
                           for e in fleet_grid.events()), 300, "the 5xx error to be recorded")
    five = [e["message"] for e in fleet_grid.events() if e["message"].startswith("Cloud provider error")]
    assert fleet_grid.orchestrator_metrics()[("rgrid_provider_errors_total", (("kind", "transient"),))] >= 1, five
    fleet_grid.clear_faults()
    done = fleet_grid.wait_all(ids, timeout=600)
    assert {ex["status"] for ex in done.values()} == {"succeeded"}
    wait_converged(fleet_grid, 120, "the stack and the cloud to agree")
    assert fleet_grid.orchestrator_metrics()[("rgrid_fleet_update_duration_seconds_count", (("result", "ok"),))] >= 1
    # A hanging cloud API: the update waits, dispatch does not.
    wait_until(lambda: any(r["state"] == "active" for r in fleet_grid.live().values()), 300, "an active worker")
    fleet_grid.fault(kind="hang", match="^POST /v1/servers$", seconds=40)
    # A script with no history is not expected to end soon: these need new servers.
    many = [fleet_grid.submit(SLEEP, ["20"], name=f"many-{uuid.uuid4().hex[:8]}.py") for _ in range(6)]
    wait_until(lambda: any(f["kind"] == "hang" and f["hits"] for f in fleet_grid.faults()), 300,
               "a server create to hang")
    quick = fleet_grid.submit(SLEEP, ["0"])
    assert fleet_grid.wait_all([quick], timeout=120)[quick]["status"] == "succeeded"
    fleet_grid.clear_faults()
    assert {ex["status"] for ex in fleet_grid.wait_all(many, timeout=600).values()} == {"succeeded"}
    wait_converged(fleet_grid, 180, "the stack and the cloud to agree")


def test_5_orchestrator_killed_mid_update_leaves_no_orphan(fleet_grid: FleetGrid):
    fleet_grid.fault(kind="hang", match="^POST /v1/servers$", count=1)
    # A script with no history is not expected to end soon, so these need new servers.
    name = f"unknown-{uuid.uuid4().hex[:8]}.py"
    ids = [fleet_grid.submit(SLEEP, ["5"], name=name) for _ in range(2 * len(fleet_grid.live()) + 4)]

    wait_until(lambda: any(f["kind"] == "hang" and f["hits"] for f in fleet_grid.faults()), 300,
               "a server create to hang inside an engine update")
    os.killpg(fleet_grid.current_pid("orchestrator"), signal.SIGKILL)
    fleet_grid.clear_faults()  # the hung create goes through: a server the state never recorded
    time.sleep(2)
    restart(fleet_grid.home, "orchestrator")
    done = fleet_grid.wait_all(ids, timeout=900)
    assert {ex["status"] for ex in done.values()} == {"succeeded"}
    wait_converged(fleet_grid, 180, "the stack and the cloud to agree")
    log = log_tail(fleet_grid, "orchestrator.log", 200_000)
    assert "pending operation(s) of an interrupted update" in log or "never recorded" in log, log[-3000:]
    assert sorted(fleet_grid.stack_servers()) == sorted(fleet_grid.worker_servers())

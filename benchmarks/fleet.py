"""The elastic fleet's figures: decision time, engine update time, and a burst's way to a new worker.

    .venv/bin/python benchmarks/fleet.py                 # all parts
    .venv/bin/python benchmarks/fleet.py --part decision # one part: decision | engine | burst | build

- decision: the provisioning and billing policies on a snapshot of 100,000 queued runs, 2,000
  running and 1,000 workers (pure functions), and the snapshot query on SQLite with as many rows.
- engine: the real Pulumi engine and hcloud plugin against the local Hetzner API, time of the
  update that adds one worker to 1, 10 and 30 existing (servers do not boot here: the cloud's
  never_boot fault, so only the engine is timed), the same engine's no-change preview beside it.
- burst: a local grid on the pulumi fleet with no worker; 4 runs are queued at once; from the
  submit to the first run started on the new worker, split into decision, engine create and boot
  (up to the agent's first heartbeat; the server boots while the update is still finishing) and
  join (first heartbeat to first run started), with the engine update's own duration beside.
- build: the engine's and plugin's build time and size, from the tools cache's build-info.txt.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._grid import load_line  # noqa: E402

ENGINE = ROOT / "scripts" / "pulumi-engine.sh"


def part_decision() -> None:
    from rgrid_core.states import WorkerState
    from rgrid_service.policies.billing import retire
    from rgrid_service.policies.provisioning import Bounds, FleetSnapshot, FleetWorker, RunningRun, provision

    now = datetime(2026, 11, 29, 12)
    workers = tuple(FleetWorker(f"w-{i}", WorkerState.ACTIVE, 2, 2, 2, now - timedelta(minutes=i % 60))
                    for i in range(1, 1001))
    running = tuple(RunningRun(now - timedelta(seconds=i % 600), 300.0 if i % 3 else None) for i in range(2000))
    snap = FleetSnapshot(now, 100_000, running, workers)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        provision(snap, Bounds(0, 2000, 2))
        retire(workers, now, timedelta(hours=1), timedelta(minutes=3), 0, snap.queued)
        times.append(time.perf_counter() - t)
    print(f"decision (policies, pure): 100,000 queued, 2,000 running, 1,000 workers: "
          f"median {statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms (goal <= 50 ms)")
    print(f"  decision: {provision(snap, Bounds(0, 2000, 2)).reason}")
    snapshot_on_sqlite()


def snapshot_on_sqlite() -> None:
    """The snapshot query behind a decision, on a database holding that many rows."""
    from sqlalchemy import insert

    from rgrid_service.db.models import Execution, Tenant, Worker
    from rgrid_service.db.session import engine_for, upgrade_schema
    from rgrid_service.orchestrator.snapshot import fleet_snapshot

    url = f"sqlite:///{tempfile.mkdtemp(prefix='rgb-fleet-')}/fleet.db"
    upgrade_schema(url)
    engine = engine_for(url)
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id="bench", name="bench"))
        conn.execute(insert(Worker), [dict(id=f"w-{i}", provider="hetzner", state="active", slots=2,
                                           server_type="cx23", location="fsn1") for i in range(1, 1001)])
        rows = [dict(id=f"ex-{i:08d}", tenant_id="bench", status="queued" if i >= 2000 else "running",
                     worker_id=None if i >= 2000 else f"w-{i % 1000 + 1}", script=f"s{i % 7}.py", args=[], env={},
                     runtime="python:3.11", timeout_seconds=60, inputs=[], seq=i + 1, queued_at=stamp,
                     started_at=None if i >= 2000 else stamp) for i in range(102_000)]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Execution), rows[start:start + 5000])
    times = []
    for _ in range(10):
        t = time.perf_counter()
        with engine.connect() as conn:
            snap = fleet_snapshot(conn, "hetzner")
        times.append(time.perf_counter() - t)
    print(f"decision snapshot (SQLite, {snap.queued} queued, {len(snap.running)} running, {len(snap.workers)} workers): "
          f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


def part_engine() -> None:
    from rgrid_service.fleet import ServerSpec
    from rgrid_service.fleet.engine import Engine
    from rgrid_service.fleet.pulumi import PulumiFleet
    from rgrid_service.settings import ServiceSettings

    bin_dir = Path(subprocess.run([str(ENGINE), "ensure"], capture_output=True, text=True, check=True).stdout.split()[-1])
    work = Path(tempfile.mkdtemp(prefix="rgb-engine-"))
    subprocess.run([str(ENGINE), "install-plugin", str(work / "pulumi" / "home")], check=True, capture_output=True)
    cloud = subprocess.Popen([sys.executable, "-m", "rgrid_service.localgrid.hetzner", "--port", "0", "--state-dir",
                              str(work / "cloud"), "--boot-delay", "0"], stdout=subprocess.DEVNULL)
    try:
        while not (work / "cloud" / "endpoint.json").exists():
            time.sleep(0.05)
        url = json.loads((work / "cloud" / "endpoint.json").read_text())["url"]
        import httpx

        httpx.post(url.removesuffix("/v1") + "/_standin/faults", json={"kind": "never_boot"}).raise_for_status()
        fleet = PulumiFleet(ServiceSettings(_env_file=None, ray_address="10.0.0.2:6379"), Engine(bin_dir, work / "pulumi"),
                            secrets.token_hex(32), url)
        spec = lambda n: [ServerSpec(f"w-{i}", "cx23", "fsn1") for i in range(1, n + 1)]  # noqa: E731
        for existing in (1, 10, 30):
            fleet.apply(spec(existing))
            t = time.perf_counter()
            fleet.preview(spec(existing))
            same = time.perf_counter() - t
            t = time.perf_counter()
            diff = fleet.preview(spec(existing + 1))
            preview = time.perf_counter() - t
            t = time.perf_counter()
            fleet.apply(spec(existing + 1))
            update = time.perf_counter() - t
            print(f"engine: +1 worker with {existing:2d} existing: update {update:5.1f} s "
                  f"(preview of it {preview:4.1f} s: {len(diff.create)} create, {len(diff.update)} update, "
                  f"{len(diff.replace)} replace; a no-change preview {same:4.1f} s)")
        fleet.apply([])
    finally:
        cloud.terminate()
        cloud.wait(30)


def part_burst() -> None:
    from rgrid_service.db.models import Execution, FleetEvent, Worker
    from rgrid_service.localgrid import grid as localgrid
    from sqlalchemy import select
    from tests.conftest import GRID_ENV, Grid, start_test_grid

    env = {**GRID_ENV, "RGRID_PROVISION_INTERVAL_SECONDS": "1", "RGRID_HEARTBEAT_INTERVAL_SECONDS": "1"}
    home, state = start_test_grid("rgb-burst-", env, fleet="pulumi", workers=0, max_workers=2)
    grid = Grid(home, state)
    try:
        t0 = time.time()
        ids = [grid.submit("print('hi')\n") for _ in range(4)]
        done = grid.wait_all(ids, timeout=600)
        with grid.engine().connect() as conn:
            first = conn.execute(select(Execution.worker_id, Execution.queued_at, Execution.started_at)
                                 .where(Execution.id.in_(ids)).order_by(Execution.started_at)).first()
            worker = conn.execute(select(Worker.created_at, Worker.active_at).where(Worker.id == first.worker_id)).one()
            update = conn.execute(select(FleetEvent.at, FleetEvent.duration_seconds)
                                  .where(FleetEvent.kind == "update", FleetEvent.message.contains(first.worker_id))
                                  .order_by(FleetEvent.id)).first()
        queued = min(datetime.fromisoformat(ex["queued_at"].replace("Z", "+00:00")).replace(tzinfo=None) for ex in done.values())
        s = lambda a, b: (b - a).total_seconds()  # noqa: E731
        # The server boots while the engine update is still finishing (state write, outputs), so
        # the create and the boot are reported together, up to the agent's first heartbeat.
        print(f"burst -> first run on a new worker: {s(queued, first.started_at):.1f} s = "
              f"decision {s(queued, worker.created_at):.1f} s + engine create and boot to the first heartbeat "
              f"{s(worker.created_at, worker.active_at):.1f} s + join (Ray node in, dispatch, claim) "
              f"{s(worker.active_at, first.started_at):.1f} s; the engine update took {update.duration_seconds:.1f} s "
              f"in all; wall clock {time.time() - t0:.1f} s")
    finally:
        localgrid.down(home)


def part_build() -> None:
    cache = Path(subprocess.run([str(ENGINE), "ensure"], capture_output=True, text=True, check=True).stdout.split()[-1]).parent
    info = dict(line.split("=", 1) for line in (cache / "build-info.txt").read_text().splitlines() if "=" in line)
    print(f"build: pulumi {info['pulumi_version']} in {info['pulumi_build_seconds']} s, "
          f"{int(info['pulumi_bytes']) / 1e6:.0f} MB; pulumi-resource-hcloud {info['hcloud_version']} in "
          f"{info['hcloud_build_seconds']} s, {int(info['pulumi_resource_hcloud_bytes']) / 1e6:.0f} MB "
          f"({info['go']}, -p {info['go_build_p']}, built {info['built_at']})")


PARTS = {"decision": part_decision, "engine": part_engine, "burst": part_burst, "build": part_build}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=list(PARTS), action="append")
    opts = ap.parse_args()
    print(load_line())
    for name in opts.part or list(PARTS):
        PARTS[name]()
    print(load_line())
    print(f"reproduce: {sys.executable} {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()

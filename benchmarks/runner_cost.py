"""The runner's own cost per run, in process: run_execution for N no-op runs against the real API.

    .venv/bin/python benchmarks/runner_cost.py [--n 300] [--threads 1]

The API (rgrid_service.api.app under uvicorn, a throwaway SQLite database, on 127.0.0.1) runs in
a process of its own; N runs are created through the tenant API, queued and dispatched to one
worker in the database, and this process runs `rgrid_runner.runner.run_execution` for each, in
--threads threads at once (the per-node runner calls it from several), with the worker's real
client (`WorkerClient`) and sandbox (prlimit, setpriv, bwrap, python3.11). The script is in the
worker's input cache, as a batch's is after its first run, so no object store is needed.

Prints the runner process's CPU per run (time.process_time: the runner's threads, not the
sandbox's processes, not the API) and medians of its wall-clock phases: the claim request, the
claim's answer -> Popen, Popen -> the script's end seen (the sandbox), the end seen -> the finish
sent, the finish request, and the whole run_execution. No Ray, no grid, no heavy lock: the
figures are the runner's code alone. Measured on a machine others share, compare rounds run
back to back (PYTHONPATH set to each tree).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SECRET = "runner-cost-secret-key-" + "x" * 32
NOOP = b"pass\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_api(db_url: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = dict(os.environ, RGRID_DATABASE_URL=db_url, RGRID_SECRET_KEY=SECRET, RGRID_S3_ENDPOINT="127.0.0.1:1")
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "rgrid_service.api.app:create_app",
                            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/v1/health", timeout=1)
            return api, url
        except httpx.TransportError:
            time.sleep(0.05)
    api.kill()
    raise SystemExit("The API did not start within 30 s.")


def dispatched_runs(db_url: str, url: str, count: int) -> tuple[list[str], str, str]:
    """count no-op runs, queued and dispatched to a new worker: (run ids, worker id, its token)."""
    import httpx
    from sqlalchemy import update

    from rgrid_core.states import ExecutionStatus
    from rgrid_service import auth, lifecycle
    from rgrid_service.db.clock import utcnow
    from rgrid_service.db.models import Execution
    from rgrid_service.db.session import make_engine
    from rgrid_service.fleet import records
    from rgrid_service.secrets import keys_for
    from rgrid_service.settings import ServiceSettings

    engine = make_engine(db_url)
    key = auth.create_key(engine, "tenant-a")
    body = dict(script="noop.py", inputs=[dict(name="noop.py", kind="file", size=len(NOOP),
                                               sha256=hashlib.sha256(NOOP).hexdigest(),
                                               md5=hashlib.md5(NOOP).hexdigest())])
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        ids = [c.post("/v1/executions", json=body).json()["id"] for _ in range(count)]
    with engine.begin() as conn:  # as submit does once the inputs are verified in the store
        conn.execute(update(Execution).where(Execution.id.in_(ids))
                     .values(status=ExecutionStatus.QUEUED, queued_at=utcnow()))
    (worker_id,) = records.request_workers(engine, 1, "local", "local", "local", 2)
    token = keys_for(ServiceSettings(secret_key=SECRET, database_url=db_url)).worker_token(worker_id)
    lifecycle.mark_dispatched(engine, [(i, worker_id) for i in ids])
    engine.dispose()
    return ids, worker_id, token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="measured runs (default 300)")
    ap.add_argument("--threads", type=int, default=1, help="runs at once, one thread each (default 1)")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured runs first (default 5)")
    args = ap.parse_args()

    from rgrid_service.db.session import upgrade_schema

    home = Path(tempfile.mkdtemp(prefix="rgrid-runner-cost-", dir="/tmp"))
    os.chmod(home, 0o755)  # the sandbox's own uid must reach the run folders
    db_url = f"sqlite:///{home / 'rgrid.db'}"
    upgrade_schema(db_url)
    api, url = serve_api(db_url)
    try:
        ids, worker_id, token = dispatched_runs(db_url, url, args.warmup + args.n)
        print(f"load before: {os.getloadavg()[0]:.2f}")
        measure(args, ids, url, worker_id, token, home / "work")
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        api.terminate()
        api.wait()
        shutil.rmtree(home, ignore_errors=True)


def measure(args, ids: list[str], url: str, worker_id: str, token: str, work_root: Path) -> None:
    from rgrid_runner import runner
    from rgrid_runner.settings import WorkerSettings
    from rgrid_runner.workerclient import WorkerClient

    cache = work_root / ".input-cache"
    cache.mkdir(parents=True)
    (cache / hashlib.sha256(NOOP).hexdigest()).write_bytes(NOOP)
    settings = WorkerSettings(api_url=url, worker_token=token, worker_id=worker_id, work_root=str(work_root))
    client = WorkerClient.for_settings(settings)
    client.register(2, "local")

    # Phase marks per run, by wrapping what run_execution calls (the current run: a thread-local).
    marks: dict[str, dict[str, float]] = {}
    current = threading.local()
    claim, finish = client.claim, client.finish
    starter, reap = runner._sandbox_starter, runner._reap

    def timed_claim(eid):
        current.eid = eid
        marks[eid] = {"claim_sent": time.perf_counter()}
        answer = claim(eid)
        marks[eid]["claimed"] = time.perf_counter()
        return answer

    def timed_finish(eid, attempt, request):
        marks[eid]["finish_sent"] = time.perf_counter()
        answer = finish(eid, attempt, request)
        marks[eid]["finished"] = time.perf_counter()
        return answer

    def timed_starter(*a, **kw):
        start = starter(*a, **kw)

        def timed_start(out_w, err_w):
            proc = start(out_w, err_w)
            marks[current.eid]["popen"] = time.perf_counter()
            return proc
        return timed_start

    def timed_reap(proc):
        marks[current.eid]["exit_seen"] = time.perf_counter()
        return reap(proc)

    client.claim, client.finish = timed_claim, timed_finish
    runner._sandbox_starter, runner._reap = timed_starter, timed_reap

    for eid in ids[:args.warmup]:
        assert runner.run_execution(eid, client, settings) == "succeeded"
    todo = list(ids[args.warmup:])
    lock = threading.Lock()
    failed: list[str] = []

    def work():
        while True:
            with lock:
                if not todo:
                    return
                eid = todo.pop()
            began = time.perf_counter()
            result = runner.run_execution(eid, client, settings)
            marks[eid].update(began=began, ended=time.perf_counter())
            if result != "succeeded":
                failed.append(f"{eid}: {result}")

    cpu, wall = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    client.close()
    if failed:
        raise SystemExit(f"{len(failed)} runs did not succeed, e.g. {failed[0]}")

    runs = [marks[e] for e in ids[args.warmup:]]

    def ms(a: str, b: str) -> str:
        return f"{statistics.median(m[b] - m[a] for m in runs) * 1000:.2f} ms"

    print(f"{args.n} no-op runs, {args.threads} at a time: runner CPU {cpu / args.n * 1000:.2f} ms per run, "
          f"{wall / args.n * 1000:.1f} ms of wall time per run")
    print(f"medians: claim request {ms('claim_sent', 'claimed')}; claim answer -> Popen {ms('claimed', 'popen')}; "
          f"Popen -> end seen {ms('popen', 'exit_seen')}; end seen -> finish sent {ms('exit_seen', 'finish_sent')}; "
          f"finish request {ms('finish_sent', 'finished')}; run_execution {ms('began', 'ended')}")


if __name__ == "__main__":
    main()

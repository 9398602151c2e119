"""Chaos suite (issue #4): faults injected into a real local multi-node grid while it works.

One grid for the directory (tests/chaos/conftest.py): a Ray head, 3 Ray worker nodes with their
agents, SeaweedFS, the API and the real orchestrator loop, on the session's real PostgreSQL, with
heartbeat 1 s, dead_after 5 s, sweep 1 s. Each scenario injects its fault, waits for its executions
to finish, and hands them to the checker (invariants.py), which asserts the invariants over the whole
recorded history and returns the figures printed as one `[chaos]` line (run pytest with -s).
docs/reliability.md records those figures from a real run.
"""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from rgrid_service.db.models import ExecutionAttempt, LogChunk, Worker

from tests.conftest import wait_until

from .conftest import CHAOS_ENV, DEAD_AFTER, HEARTBEAT, SWEEP, ChaosGrid, Poller, server_processes, signal_server
from .invariants import check

pytestmark = [pytest.mark.grid, pytest.mark.postgres]

# Every script records which run of it produced its output (the checker reads attempt.txt).
STAMP = "open('attempt.txt', 'w').write(os.environ['RGRID_EXECUTION_ID'] + ' ' + os.environ['RGRID_ATTEMPT'])\n"

SLEEPER = "import os, sys, time\ntime.sleep(float(sys.argv[1]))\n" + STAMP + "print('done')\n"

# Logs a line every 0.2 s while it runs: a run that is fenced off has log chunks to try to write.
TICKER = (
    "import os, sys, time\n"
    "end = time.time() + float(sys.argv[1])\n"
    "while time.time() < end:\n"
    "    print('tick', os.environ['RGRID_ATTEMPT'], flush=True)\n"
    "    time.sleep(0.2)\n" + STAMP
)

# A ~2 MB output plus the attempt stamp.
WRITER = (
    "import os, sys, time\n"
    "time.sleep(float(sys.argv[1]))\n"
    "open('big.bin', 'wb').write(os.urandom(2 * 1024 * 1024))\n" + STAMP + "print('wrote 2 MB')\n"
)


def invariants(grid: ChaosGrid, ids, **kw):
    return check(grid.engine(), ids, dead_after=DEAD_AFTER, sweep=SWEEP, heartbeat=HEARTBEAT, **kw)


def batch(n: int) -> str:
    return f"chaos-{n}-" + uuid.uuid4().hex[:8]


def report(rep, started: float) -> None:
    print(f"\n{rep.line()}; scenario wall time {time.monotonic() - started:.0f} s", flush=True)


# ---------------------------------------------------------------- 1. SIGKILL a worker mid-execution


def test_1_sigkill_worker_mid_execution(chaos: ChaosGrid):
    started = time.monotonic()
    ex_id = chaos.submit(SLEEPER, ["6"])
    running = chaos.wait_status(ex_id, ("running",))
    victim = running["worker_id"]
    time.sleep(1.5)  # well inside the script
    fault_at = chaos.db_now()
    chaos.kill_worker(victim, signal.SIGKILL)

    done = chaos.wait_all([ex_id], timeout=120)[ex_id]
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2 and done["worker_id"] != victim, done
    rep = invariants(chaos, [ex_id], scenario="1 SIGKILL worker mid-execution",
                     faults=f"SIGKILL of every process of worker {victim} (Ray node, agent, runner, sandbox)",
                     fault_at=fault_at, store=chaos.store())
    assert rep.lost == 1

    # The attempt history a person sees, as the issue words it.
    shown = chaos.rgrid("status", ex_id, env={"COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr.decode()
    text = " ".join(shown.stdout.decode().split())
    assert re.search(rf"attempt 1 on {victim}: lost \(attempt 1 on worker {victim} lost at \d\d:\d\d:\d\d: "
                     rf"(no heartbeat from {victim} since \d\d:\d\d:\d\d \(\d+s\)|Ray reported node of {victim} dead)\)",
                     text), text
    assert f"attempt 2 on {done['worker_id']}: succeeded" in text, text
    history = re.search(r"attempt 1 on .*", text).group(0)
    rep.notes.append(f"rgrid status: {history!r}")
    report(rep, started)


# ---------------------------------------------------------------- 2. kill 2 of 3 workers during a 100-job batch


def test_2_kill_two_of_three_workers_during_100_job_batch(chaos: ChaosGrid):
    started = time.monotonic()
    ids = chaos.submit_many(SLEEPER, 100, ["0.3"], batch_id=batch(100))
    wait_until(lambda: chaos.count_status(ids).get("succeeded", 0) >= 15, 180, "15 executions to succeed")
    busy = chaos.running_on(ids)
    live = chaos.live_workers()
    victims = sorted(live, key=lambda w: -len(busy.get(w, [])))[:2]
    fault_at = chaos.db_now()
    for w in victims:
        chaos.kill_worker(w, signal.SIGKILL)

    done = chaos.wait_all(ids, timeout=400)
    rep = invariants(chaos, list(done), scenario="2 kill 2 of 3 workers during a 100-job batch",
                     faults=f"SIGKILL of {' and '.join(victims)} at once "
                            f"(running {sum(len(busy.get(w, [])) for w in victims)} executions)",
                     fault_at=fault_at, store=chaos.store())
    assert rep.statuses == {"succeeded": 100}
    assert rep.lost >= 1, "the killed workers were running nothing: the fault tested nothing"
    assert rep.duplicated == 0
    report(rep, started)


# ---------------------------------------------------------------- 3. a zombie comes back


def test_3_sigstopped_worker_comes_back_as_a_fenced_off_zombie(chaos: ChaosGrid):
    started = time.monotonic()
    ex_id = chaos.submit(TICKER, ["6"])
    running = chaos.wait_status(ex_id, ("running",))
    zombie = running["worker_id"]
    time.sleep(1)  # it has logged a few lines as attempt 1
    # The provider deletes dead servers; a partitioned one it cannot reach stays up. Model that by
    # taking the worker out of the provider's state, so only its own agent can take it down.
    session = chaos.detach_worker(zombie)
    fault_at = chaos.db_now()
    frozen = signal_server(session, signal.SIGSTOP)
    stopped = time.monotonic()

    second = chaos.wait_status(ex_id, ("running", "succeeded"), timeout=60, where=lambda e: e["attempt"] >= 2)
    assert second["worker_id"] != zombie
    time.sleep(max(0.0, DEAD_AFTER + 3 - (time.monotonic() - stopped)))
    resumed_at = chaos.db_now()
    resumed = time.monotonic()
    signal_server(session, signal.SIGCONT)
    resumed_while = chaos.execution(ex_id)["status"]

    # Its agent learns it was declared dead and takes the whole worker down.
    wait_until(lambda: not server_processes(session), 30, f"zombie {zombie} to take itself down")
    gone = time.monotonic()
    chaos.orphans.remove(session)
    agent_log = chaos._log(f"{zombie}.log")
    assert f"{zombie} was given up by the control plane" in agent_log, agent_log[-2000:]

    done = chaos.wait_all([ex_id], timeout=120)[ex_id]
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    rep = invariants(chaos, [ex_id], scenario="3 SIGSTOP zombie, re-run elsewhere, SIGCONT",
                     faults=f"SIGSTOP of all {frozen} processes of {zombie} for "
                            f"{(resumed_at - fault_at).total_seconds():.1f} s, then SIGCONT "
                            f"(attempt 2 was {resumed_while} at that moment)",
                     fault_at=fault_at, store=chaos.store())
    with chaos.engine().connect() as conn:
        tries = conn.execute(select(ExecutionAttempt.attempt, ExecutionAttempt.worker_id, ExecutionAttempt.outcome,
                                    ExecutionAttempt.finished_at)
                             .where(ExecutionAttempt.execution_id == ex_id)
                             .order_by(ExecutionAttempt.attempt)).all()
        chunks = conn.execute(select(LogChunk.attempt, LogChunk.created_at, LogChunk.data)
                              .where(LogChunk.execution_id == ex_id)).all()
        state = conn.execute(select(Worker.state).where(Worker.id == zombie)).scalar_one()
    assert [(t.attempt, t.worker_id, t.outcome) for t in tries] == [
        (1, zombie, "lost"), (2, done["worker_id"], "succeeded")]
    assert state == "dead"
    first = [c for c in chunks if c.attempt == 1]
    assert first, "attempt 1 logged nothing before it was stopped"
    assert all(c.created_at <= tries[0].finished_at for c in first)
    assert not [c for c in first if c.created_at >= resumed_at]
    store = chaos.store()
    leftovers = list(store.client.list_objects(store.bucket, prefix=f"executions/{ex_id}/outputs/a1/", recursive=True))
    assert not leftovers, [o.object_name for o in leftovers]
    # What the zombie's runner reported once it ran again (when its answer reached the head).
    said = [ln.split(f"{ex_id}: ", 1)[1][:80] for ln in chaos._log("orchestrator.log").splitlines()
            if f"{ex_id}: " in ln and "dispatched" not in ln]
    rep.notes.append(f"attempt 1 log chunks: {len(first)}, all before it was declared lost; no attempt-1 "
                     f"objects in the store; zombie gone {gone - resumed:.1f} s after SIGCONT; "
                     f"runner results reaped: {said}")
    report(rep, started)


# ---------------------------------------------------------------- 4. PostgreSQL restart


def _sentence(body: str) -> bool:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, str) and detail[:1].isupper() and " " in detail and detail.rstrip().endswith(".")


def test_4_postgresql_restart_during_a_batch(chaos: ChaosGrid):
    started = time.monotonic()
    ids = chaos.submit_many(SLEEPER, 24, ["1"], batch_id=batch(24))
    wait_until(lambda: chaos.count_status(ids).get("running", 0) >= 3, 60, "3 executions running")
    paths = ["/v1/health", "/v1/executions?limit=5"]
    with Poller(chaos, paths) as poll:
        time.sleep(0.3)
        t0 = time.monotonic()
        chaos.pg.restart("immediate")
        back = time.monotonic()
        time.sleep(3)
    records = list(poll.records)
    how = "pg_ctl restart -m immediate"
    forced = os.environ.get("RGRID_CHAOS_PG_OUTAGE") == "stop"  # exercise the longer outage on purpose
    if forced or not any(r[2] == 503 for r in records):
        # The restart was faster than the poller: keep it away for 3 s so the window is certain.
        with Poller(chaos, paths) as poll:
            time.sleep(0.3)
            t0 = time.monotonic()
            chaos.pg_stop()
            time.sleep(3)
            chaos.pg_start()
            back = time.monotonic()
            time.sleep(3)
        records += poll.records
        how += (" (RGRID_CHAOS_PG_OUTAGE=stop)" if forced else " (no 503 seen)") + \
            ", then pg_ctl stop -m immediate; 3 s; pg_ctl start"
    codes = {}
    for _t, path, code, _body in records:
        codes.setdefault(path, {}).setdefault(code, 0)
        codes[path][code] += 1
    bad = [(p, c, b[:300]) for _t, p, c, b in records if c not in (200, 503)]
    assert not bad, f"the API answered something else than 200/503 while PostgreSQL was away: {bad[:5]}"
    wordless = [(p, b[:300]) for _t, p, c, b in records if c != 200 and not _sentence(b)]
    assert not wordless, f"error answers without a sentence in 'detail': {wordless[:5]}"
    assert any(c == 503 for _t, _p, c, _b in records), codes
    errors = [t for t, _p, c, _b in records if c != 200 and t >= t0]
    api_back = max(errors) if errors else t0
    ok_after = [t for t, _p, c, _b in records if c == 200 and t > api_back]
    assert ok_after, "the API never answered 200 again after the database came back"

    done = chaos.wait_all(ids, timeout=300)
    rep = invariants(chaos, list(done), scenario="4 PostgreSQL restart during a batch", faults=how,
                     store=chaos.store())
    assert rep.statuses == {"succeeded": 24} and rep.duplicated == 0
    rep.recover_seconds = min(ok_after) - t0
    sample = next(b for _t, _p, c, b in records if c == 503)
    rep.notes.append(f"database away {back - t0:.1f} s; API answers {codes}; 503 body {json.loads(sample)['detail']!r}")
    # Runs caught between their last lease renewal and their commit (renew() retries silently).
    retried = sum(p.read_text(errors="replace").count("database unreachable")
                  for p in (chaos.home / "local" / "ray").glob("session_2*/logs/worker-*.err"))
    rep.notes.append(f"runner commits/reads that waited for the database: {retried}")
    report(rep, started)


# ---------------------------------------------------------------- 5. object store outage during uploads


def _probe(store) -> bool:
    """One real write with a short timeout and no client-side retries."""
    import httpx

    try:
        return httpx.put(store.presign_put("chaos-probe"), content=b"ok", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_5_object_store_outage_during_uploads(chaos: ChaosGrid):
    from tests.gridctl import restart_s3

    started = time.monotonic()
    ids = chaos.submit_many(WRITER, 16, ["1.5"], batch_id=batch(16))
    wait_until(lambda: chaos.count_status(ids).get("running", 0) >= 3, 60, "3 executions running")
    time.sleep(1)  # the first scripts are about to write and upload their 2 MB
    fault_at = chaos.db_now()
    s3 = threading.Thread(target=restart_s3, args=(chaos.home, 4.0))
    s3.start()
    s3.join(120)
    assert not s3.is_alive()
    # The S3 port opens well before SeaweedFS serves again (its master re-elects itself first):
    # the store is back when a real write succeeds.
    store = chaos.store()
    wait_until(lambda: _probe(store), 120, "the object store to accept writes again", step=0.2)
    back_at = chaos.db_now()

    done = chaos.wait_all(ids, timeout=300)
    rep = invariants(chaos, list(done), scenario="5 object store down 4 s during uploads",
                     faults=f"SeaweedFS stopped for 4 s, serving again {(back_at - fault_at).total_seconds():.1f} s "
                            "after the stop",
                     store=chaos.store(), verify_content=True, expect_status=None)
    failed = collections.Counter((ex["reason"] or "")[:90] for ex in done.values() if ex["status"] == "failed")
    for ex_id, ex in done.items():
        assert ex["status"] in ("succeeded", "failed"), ex
        if ex["status"] == "failed":  # an upload that gave up is a failure with a sentence, never a success
            assert "could not" in (ex["reason"] or "").lower(), ex
    with chaos.api() as api:
        for ex_id, ex in done.items():
            if ex["status"] == "succeeded":
                outs = {o["path"]: o for o in api.get(f"/v1/executions/{ex_id}/outputs").json()}
                assert set(outs) == {"big.bin", "attempt.txt"}, outs
                assert outs["big.bin"]["size"] == 2 * 1024 * 1024
    with chaos.engine().connect() as conn:
        spans = conn.execute(select(ExecutionAttempt.started_at, ExecutionAttempt.finished_at)
                             .where(ExecutionAttempt.execution_id.in_(ids))).all()
    overlapped = sum(1 for s in spans if s.started_at < back_at and s.finished_at > fault_at)
    assert overlapped >= 1, "no execution was running while the store was away"
    rep.recover_seconds = (back_at - fault_at).total_seconds()
    rep.notes.append(f"{overlapped} attempts were running while the store was away, all of them waited "
                     f"and retried; the batch finished {(max(s.finished_at for s in spans) - back_at).total_seconds():.1f} s "
                     "after the store was back")
    if failed:
        rep.notes.append(f"failures: {dict(failed)}")
    report(rep, started)


# ---------------------------------------------------------------- 6. orchestrator killed and restarted


def test_6_orchestrator_killed_and_restarted_during_a_batch(chaos: ChaosGrid):
    from rgrid_service.localgrid import grid as localgrid

    started = time.monotonic()
    ids = chaos.submit_many(SLEEPER, 30, ["1"], batch_id=batch(30))
    wait_until(lambda: chaos.count_status(ids).get("succeeded", 0) >= 4, 120, "4 executions to succeed")
    state = chaos.current()
    fault_at = chaos.db_now()
    os.killpg(state.pids["orchestrator"], signal.SIGKILL)
    time.sleep(3)
    restart_at = chaos.db_now()
    env = {**localgrid.service_env_for(state), **CHAOS_ENV}
    localgrid.start_orchestrator(state, env)

    done = chaos.wait_all(ids, timeout=300)
    rep = invariants(chaos, list(done), scenario="6 orchestrator SIGKILLed and restarted during a batch",
                     faults="SIGKILL of the orchestrator, restarted 3 s later", store=chaos.store())
    assert rep.statuses == {"succeeded": 30}
    assert all(ex["attempt"] == 1 for ex in done.values())
    with chaos.engine().connect() as conn:
        starts = sorted(conn.execute(select(ExecutionAttempt.started_at)
                                     .where(ExecutionAttempt.execution_id.in_(ids))).scalars())
    after = [s for s in starts if s > restart_at]
    assert after, "nothing was dispatched after the restart"
    rep.recover_seconds = (after[0] - fault_at).total_seconds()
    rep.notes.append(f"first claim {(after[0] - restart_at).total_seconds():.1f} s after the restart")
    report(rep, started)


# ---------------------------------------------------------------- 7. database outage of 3 x dead_after


def test_7_database_outage_of_three_times_dead_after(chaos: ChaosGrid):
    started = time.monotonic()
    ids = chaos.submit_many(SLEEPER, 18, ["6"], batch_id=batch(18))
    wait_until(lambda: chaos.count_status(ids).get("running", 0) >= 4, 60, "4 executions running")
    busy = chaos.running_on(ids)
    fault_at = chaos.db_now()
    t0 = time.monotonic()
    chaos.pg_stop()
    time.sleep(3 * DEAD_AFTER)
    chaos.pg_start()
    away = time.monotonic() - t0
    back_at = chaos.db_now()

    done = chaos.wait_all(ids, timeout=300)
    rep = invariants(chaos, list(done), scenario="7 database outage of 3 x dead_after during a batch",
                     faults=f"pg_ctl stop -m immediate; {3 * DEAD_AFTER:.0f} s; pg_ctl start "
                            f"({sum(len(v) for v in busy.values())} executions running)",
                     fault_at=fault_at, store=chaos.store())
    assert rep.statuses == {"succeeded": 18} and rep.duplicated == 0
    assert rep.lost == 0, "a run was handed back because of the outage"
    assert all(ex["attempt"] == 1 for ex in done.values())
    with chaos.engine().connect() as conn:
        declared = conn.execute(select(Worker.id, Worker.dead_reason).where(Worker.dead_at >= fault_at)).all()
        spans = conn.execute(select(ExecutionAttempt.started_at, ExecutionAttempt.finished_at)
                             .where(ExecutionAttempt.execution_id.in_(ids))).all()
    assert not declared, f"workers declared dead because of the database outage: {declared}"
    across = sum(1 for s in spans if s.started_at < fault_at and s.finished_at > back_at)
    assert across >= 1, "no run was running across the outage: the fault tested nothing"
    after = sorted(s.started_at for s in spans if s.started_at > back_at)
    assert after, "nothing was claimed after the database came back"
    rep.recover_seconds = (after[0] - back_at).total_seconds()
    rep.notes.append(f"database away {away:.1f} s (dead_after {DEAD_AFTER:.0f} s); no worker declared dead; "
                     f"{across} runs ran across the outage and committed once; first claim "
                     f"{rep.recover_seconds:.1f} s after the database was back")
    report(rep, started)


# ---------------------------------------------------------------- 8. API process SIGKILLed and restarted


def test_8_api_sigkilled_and_restarted_during_a_batch(chaos: ChaosGrid):
    from rgrid_service.localgrid import grid as localgrid
    from rgrid_service.localgrid.procs import wait_for_port

    started = time.monotonic()
    ids = chaos.submit_many(SLEEPER, 40, ["2"], batch_id=batch(40))
    wait_until(lambda: chaos.count_status(ids).get("succeeded", 0) >= 4, 120, "4 executions to succeed")
    state = chaos.current()
    fault_at = chaos.db_now()
    t0 = time.monotonic()
    os.killpg(state.pids["api"], signal.SIGKILL)
    time.sleep(3)
    localgrid.start_api(state, {**localgrid.service_env_for(state), **CHAOS_ENV})
    state.save()
    wait_for_port(int(state.api_url.rsplit(":", 1)[1]), 120, "The API")
    wait_until(lambda: _health(chaos) == 200, 120, "the API to answer /v1/health", step=0.1)
    api_back = time.monotonic()
    back_at = chaos.db_now()

    done = chaos.wait_all(ids, timeout=300)
    rep = invariants(chaos, list(done), scenario="8 API SIGKILLed and restarted during a batch",
                     faults="SIGKILL of the API process group, restarted 3 s later", fault_at=fault_at,
                     store=chaos.store())
    assert rep.statuses == {"succeeded": 40} and rep.duplicated == 0
    with chaos.engine().connect() as conn:
        declared = conn.execute(select(Worker.id, Worker.dead_reason).where(Worker.dead_at >= fault_at)).all()
        starts = sorted(conn.execute(select(ExecutionAttempt.started_at)
                                     .where(ExecutionAttempt.execution_id.in_(ids))).scalars())
    assert not declared, f"workers declared dead because the API was away: {declared}"
    assert rep.lost == 0, "a run was handed back because the API was away"
    after = [s for s in starts if s > back_at]
    rep.recover_seconds = api_back - t0
    rep.notes.append(f"API answering again {api_back - t0:.1f} s after the kill; "
                     + (f"first claim {(after[0] - back_at).total_seconds():.1f} s after that"
                        if after else "the batch had no claims left after it"))
    report(rep, started)


def _health(grid: ChaosGrid) -> int:
    import httpx

    try:
        return httpx.get(grid.state.api_url + "/v1/health", timeout=2).status_code
    except httpx.HTTPError:
        return -1


# ---------------------------------------------------------------- 9. Ray head (GCS) killed and restarted


def test_9_ray_head_killed_and_restarted_during_a_batch(chaos: ChaosGrid):
    from tests.gridctl import restart_head

    started = time.monotonic()
    workers = chaos.wait_for_workers()
    joins = {w: chaos._log(f"{w}.log").count("Ray runtime started") for w in workers}
    ids = chaos.submit_many(SLEEPER, 24, ["2"], batch_id=batch(24))
    # Two runs that outlive the old cluster's raylets (they exit within about a minute of the head's
    # death): their runners die with them, and the lease expiry must hand them back.
    long_ids = chaos.submit_many(SLEEPER, 2, ["65"])
    wait_until(lambda: chaos.count_status(ids).get("succeeded", 0) >= 4
               and chaos.count_status(long_ids).get("running", 0) == 2, 180,
               "4 executions to succeed and both long runs to run")
    fault_at = chaos.db_now()
    t0 = time.monotonic()
    head_up = restart_head(chaos.home, down_seconds=3)
    # Every worker's Ray node re-joins the new cluster (its agent never stopped beating).
    wait_until(lambda: all(chaos._log(f"{w}.log").count("Ray runtime started") > joins[w] for w in workers),
               240, "every worker's Ray node to join the restarted head", step=0.5)
    rejoined = time.monotonic()

    done = chaos.wait_all(ids + long_ids, timeout=400)
    rep = invariants(chaos, list(done), scenario="9 Ray head (GCS) SIGKILLed and restarted during a batch",
                     faults="SIGKILL of the Ray head's process group (GCS, raylet, dashboard), "
                            "restarted on the same port 3 s later", fault_at=fault_at, store=chaos.store())
    assert rep.statuses == {"succeeded": 26} and rep.duplicated == 0
    with chaos.engine().connect() as conn:
        declared = conn.execute(select(Worker.id, Worker.dead_reason).where(Worker.dead_at >= fault_at)).all()
        tries = conn.execute(select(ExecutionAttempt.execution_id, ExecutionAttempt.attempt,
                                    ExecutionAttempt.started_at, ExecutionAttempt.finished_at,
                                    ExecutionAttempt.outcome, ExecutionAttempt.reason)
                             .where(ExecutionAttempt.execution_id.in_(ids + long_ids))).all()
    assert not declared, f"workers declared dead because their Ray head went away: {declared}"
    lost = [t for t in tries if t.outcome == "lost"]
    assert all("stopped renewing its lease" in t.reason for t in lost), [t.reason for t in lost]
    across = [t for t in tries if t.outcome == "succeeded" and t.started_at < fault_at < t.finished_at]
    last_start = max(t.started_at for t in tries)
    rep.recover_seconds = (last_start - fault_at).total_seconds()
    restarts = chaos._log("orchestrator.log").count("the orchestrator process ended")
    rep.notes.append(f"head back {head_up - t0:.1f} s after the kill; every worker re-joined after "
                     f"{rejoined - t0:.1f} s; {len(across)} runs that were running at the kill committed once; "
                     f"{len(lost)} attempts handed back by lease expiry; orchestrator restarted its driver "
                     f"{restarts} time(s); the batch done {(max(t.finished_at for t in tries) - fault_at).total_seconds():.1f} s "
                     "after the kill")
    report(rep, started)

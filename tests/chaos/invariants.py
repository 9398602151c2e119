"""The chaos checker: invariants over the whole recorded history of a set of executions.

It reads only the database (executions, execution_attempts, execution_outputs, log_chunks, workers,
worker_heartbeats) and, when given one, the object store. The four invariants of issue #4:

1. every execution reached exactly one terminal state: it is terminal now, its attempts are numbered
   1..n without gaps, each finished, every one but the last was `lost`, the last one's outcome is the
   execution's status, and at most one attempt ever committed a result;
2. each committed output came from the attempt recorded as the winner: output rows carry the
   execution's final attempt, their objects live under that attempt's prefix, exist in the store with
   the recorded size (and sha256), and an `attempt.txt` the script wrote says "<id> <winning attempt>";
3. attempts never exceed max_attempts;
4. no execution stayed running on a dead worker longer than dead_after plus one sweep: each lost
   attempt was ended no later than dead_after + sweep interval + slack after its worker's last
   heartbeat; nothing of a lost attempt (log chunk or output) was written after it was declared
   lost; no attempt was started on a worker after that worker was declared dead. An attempt whose
   runner died on a live worker (its lease expired: the Ray head went away) is lost without its
   worker being dead; its bound is the lease expiry instead: it was ended no later than
   dead_after + heartbeat + sweep (the lease timeout) + sweep + slack after its runner's last
   renewal (named in its reason); the rest of 4 holds for it too.

`check` raises AssertionError listing every violation, and returns the figures the scenario reports.
"""
from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from rgrid_core.states import TERMINAL, WITH_OUTPUTS, ExecutionStatus
from rgrid_service.db.models import (
    Execution,
    ExecutionAttempt,
    ExecutionOutput,
    LogChunk,
    Worker,
    WorkerHeartbeat,
)

COMMITTED = WITH_OUTPUTS  # outcomes that carry a result
LOST = ExecutionStatus.LOST
LEASE_EXPIRED = "its runner stopped renewing its lease"  # lifecycle.expire_leases's reason


@dataclass
class Report:
    scenario: str
    executions: int
    faults: str
    statuses: dict[str, int]
    attempts: int
    lost: int  # attempts ended as lost (their execution re-queued or, if exhausted, lost)
    duplicated: int  # executions with more than one committed result: must be 0
    recover_seconds: float | None = None  # fault -> the last orphan's next attempt started
    detect_seconds: float | None = None  # fault -> the last orphan declared lost
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        status = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        rec = "n/a" if self.recover_seconds is None else f"{self.recover_seconds:.1f} s"
        det = "" if self.detect_seconds is None else f" (detected after {self.detect_seconds:.1f} s)"
        extra = ("; " + "; ".join(self.notes)) if self.notes else ""
        return (f"[chaos] {self.scenario}: executions={self.executions} ({status}), attempts={self.attempts}, "
                f"faults={self.faults}, lost={self.lost}, duplicated={self.duplicated}, "
                f"time to recover={rec}{det}{extra}")


def last_renewal(reason: str, started_at: datetime, finished_at: datetime) -> datetime:
    """The last lease renewal named in a lease-expired attempt's reason ("... stopped renewing its
    lease at HH:MM:SS", database clock, or "at its start"): on finished_at's day, or the day before
    when that would be later than finished_at (the run crossed midnight)."""
    tail = reason.rsplit(f"{LEASE_EXPIRED} at ", 1)[-1].strip()
    if tail.startswith("its start"):
        return started_at
    t = datetime.strptime(tail[:8], "%H:%M:%S").time()
    renewed = finished_at.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)
    return renewed - timedelta(days=1) if renewed > finished_at else renewed


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def check(engine, ids: list[str], *, scenario: str, faults: str, dead_after: float, sweep: float,
          heartbeat: float | None = None, slack: float = 2.0, fault_at: datetime | None = None, store=None, verify_content: bool = False,
          expect_status: str | None = "succeeded") -> Report:
    """Assert the invariants for `ids` and return the scenario's figures.

    fault_at (database clock) is when the fault was injected: recovery is measured from it.
    store: an ObjectStore; when given, every committed output object must exist with its recorded
    size (verify_content: and sha256). expect_status: every execution must have ended so.
    heartbeat: the heartbeat interval, part of the lease timeout (None: dead_after, a loose bound)."""
    ids = list(ids)
    with engine.connect() as conn:
        execs = {r.id: r for r in conn.execute(
            select(Execution.id, Execution.status, Execution.attempt, Execution.max_attempts,
                   Execution.worker_id, Execution.finished_at, Execution.reason)
            .where(Execution.id.in_(ids))
        ).all()}
        attempts = collections.defaultdict(list)
        for a in conn.execute(
            select(ExecutionAttempt.execution_id, ExecutionAttempt.attempt, ExecutionAttempt.worker_id,
                   ExecutionAttempt.started_at, ExecutionAttempt.finished_at, ExecutionAttempt.outcome,
                   ExecutionAttempt.reason)
            .where(ExecutionAttempt.execution_id.in_(ids)).order_by(ExecutionAttempt.attempt)
        ).all():
            attempts[a.execution_id].append(a)
        outputs = collections.defaultdict(list)
        for o in conn.execute(
            select(ExecutionOutput.execution_id, ExecutionOutput.attempt, ExecutionOutput.path,
                   ExecutionOutput.size, ExecutionOutput.sha256, ExecutionOutput.object_key)
            .where(ExecutionOutput.execution_id.in_(ids))
        ).all():
            outputs[o.execution_id].append(o)
        chunks = conn.execute(
            select(LogChunk.execution_id, LogChunk.attempt, LogChunk.created_at)
            .where(LogChunk.execution_id.in_(ids))
        ).all()
        worker_ids = {a.worker_id for rows in attempts.values() for a in rows if a.worker_id}
        workers = {w.id: w for w in conn.execute(
            select(Worker.id, Worker.state, Worker.dead_at, Worker.dead_reason, WorkerHeartbeat.last_heartbeat_at)
            .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
            .where(Worker.id.in_(list(worker_ids)))
        ).all()}

    problems: list[str] = []
    bound = dead_after + sweep + slack
    lease_bound = dead_after + (dead_after if heartbeat is None else heartbeat) + 2 * sweep + slack
    duplicated = 0
    lost_attempts = []

    for ex_id in ids:
        ex = execs.get(ex_id)
        if ex is None:
            problems.append(f"{ex_id}: not in the database")
            continue
        tries = attempts[ex_id]
        # 1. exactly one terminal state
        if ex.status not in TERMINAL:
            problems.append(f"{ex_id}: still {ex.status} (not terminal)")
        elif ex.finished_at is None:
            problems.append(f"{ex_id}: {ex.status} without finished_at")
        if expect_status and ex.status != expect_status:
            problems.append(f"{ex_id}: ended {ex.status}, expected {expect_status} ({ex.reason})")
        if [a.attempt for a in tries] != list(range(1, ex.attempt + 1)):
            problems.append(f"{ex_id}: attempt rows {[a.attempt for a in tries]} but execution.attempt={ex.attempt}")
        for a in tries:
            if a.finished_at is None or a.outcome is None:
                problems.append(f"{ex_id}: attempt {a.attempt} on {a.worker_id} never finished")
            elif a.attempt < ex.attempt and a.outcome != LOST:
                problems.append(f"{ex_id}: attempt {a.attempt} ended {a.outcome} yet attempt {ex.attempt} followed")
        if tries and ex.status in TERMINAL and tries[-1].outcome != ex.status:
            problems.append(f"{ex_id}: status {ex.status} but its last attempt says {tries[-1].outcome}")
        committed = [a for a in tries if a.outcome in COMMITTED]
        output_attempts = {o.attempt for o in outputs[ex_id]}
        if len(committed) > 1 or len(output_attempts) > 1:
            duplicated += 1
            problems.append(f"{ex_id}: committed by attempts {[a.attempt for a in committed]}, "
                            f"outputs from attempts {sorted(output_attempts)}")
        # 2. committed outputs come from the winner
        for o in outputs[ex_id]:
            if ex.status not in COMMITTED or o.attempt != ex.attempt:
                problems.append(f"{ex_id}: output {o.path} from attempt {o.attempt}, "
                                f"but the winner is attempt {ex.attempt} ({ex.status})")
            if f"/outputs/a{o.attempt}/" not in o.object_key:
                problems.append(f"{ex_id}: output {o.path} stored at {o.object_key}, not under a{o.attempt}/")
            if store is not None:
                problems.extend(_check_object(store, ex_id, ex.attempt, o, verify_content))
        # 3. attempts bounded
        if ex.attempt > ex.max_attempts or len(tries) > ex.max_attempts:
            problems.append(f"{ex_id}: {len(tries)} attempts, max_attempts={ex.max_attempts}")
        # 4. dead workers
        for a in tries:
            w = workers.get(a.worker_id)
            if w is not None and w.dead_at is not None and a.started_at > w.dead_at:
                problems.append(f"{ex_id}: attempt {a.attempt} started on {a.worker_id} after it was declared dead")
            if a.outcome != LOST:
                continue
            lost_attempts.append(a)
            if LEASE_EXPIRED in (a.reason or "") and w is not None and w.dead_at is None:
                # its runner died, its worker lives on: the lease expiry re-queued it
                renewed = last_renewal(a.reason, a.started_at, a.finished_at)
                if _seconds(a.finished_at, renewed) > lease_bound:
                    problems.append(
                        f"{ex_id}: attempt {a.attempt} on live {a.worker_id} was lost "
                        f"{_seconds(a.finished_at, renewed):.1f} s after its last lease renewal "
                        f"(bound {lease_bound:.1f} s)")
            elif w is None or w.state != "dead" or w.dead_at is None:
                problems.append(f"{ex_id}: attempt {a.attempt} lost on {a.worker_id}, which is not marked dead")
                continue
            last = w.last_heartbeat_at if w.dead_at is not None else None
            if last is not None and _seconds(a.finished_at, last) > bound:
                problems.append(
                    f"{ex_id}: attempt {a.attempt} stayed running on dead {a.worker_id} for "
                    f"{_seconds(a.finished_at, last):.1f} s after its last heartbeat (bound {bound:.1f} s)")
            late = [c for c in chunks if c.execution_id == ex_id and c.attempt == a.attempt
                    and c.created_at > a.finished_at]
            if late:
                problems.append(f"{ex_id}: {len(late)} log chunk(s) of lost attempt {a.attempt} written after "
                                f"it was declared lost at {a.finished_at}")
            if a.attempt in output_attempts:
                problems.append(f"{ex_id}: outputs of lost attempt {a.attempt} were committed")

    statuses = collections.Counter(ex.status for ex in execs.values())
    report = Report(scenario=scenario, executions=len(ids), faults=faults, statuses=dict(statuses),
                    attempts=sum(len(t) for t in attempts.values()), lost=len(lost_attempts),
                    duplicated=duplicated)
    if fault_at is not None:
        orphans = [a for a in lost_attempts if a.finished_at >= fault_at]
        if orphans:
            report.detect_seconds = max(_seconds(a.finished_at, fault_at) for a in orphans)
            nexts = []
            for a in orphans:
                following = [b for b in attempts[a.execution_id] if b.attempt == a.attempt + 1]
                if following:
                    nexts.append(_seconds(following[0].started_at, fault_at))
            report.recover_seconds = max(nexts) if nexts else None
    assert not problems, f"{scenario}: {len(problems)} invariant violation(s):\n  " + "\n  ".join(problems[:50])
    return report


def _check_object(store, ex_id: str, winner: int, o, verify_content: bool) -> list[str]:
    stat = store.stat(o.object_key)
    if stat is None:
        return [f"{ex_id}: committed output {o.path} is missing from the store ({o.object_key})"]
    if stat.size != o.size:
        return [f"{ex_id}: output {o.path} is {stat.size} bytes in the store, {o.size} recorded"]
    if not (verify_content or o.path == "attempt.txt"):
        return []
    data = _get(store, o.object_key)
    if hashlib.sha256(data).hexdigest() != o.sha256:
        return [f"{ex_id}: output {o.path} does not match its recorded sha256"]
    if o.path == "attempt.txt" and data.decode(errors="replace").split() != [ex_id, str(winner)]:
        return [f"{ex_id}: attempt.txt says {data[:80]!r}, but the winner is attempt {winner}"]
    return []


def _get(store, key: str) -> bytes:
    resp = store.client.get_object(store.bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()

"""The orchestrator's Prometheus metrics: what it sees happen, served on its own small HTTP server
(`orchestrator_metrics_host`/`_port`; the API's /metrics has the queue and fleet as they are now).

- runs that ended, by status, and two latency histograms, each observed once per run: queued→running
  (its first claim) and submit→finished. The run observer reads them from the database on two
  index-backed cursors (new execution_attempts by id, ended attempts by finished_at), starting at
  the orchestrator's start: counters begin at zero with the process, as Prometheus expects. A run
  canceled before it ever ran has no attempt and is not counted here.
- fleet updates (their duration, by result) and provider errors by kind, told by the fleet manager;
- attempts priced by the cost tick.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from prometheus_client import Counter, Histogram, start_http_server
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rgrid_core.states import TERMINAL

from .. import lifecycle
from ..db.models import Execution, ExecutionAttempt
from ..fleet import error_kind
from .costs import JUST_BEFORE

log = logging.getLogger("rgrid.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)

RUNS_ENDED = Counter("rgrid_runs_ended", "Runs that reached a final status after running (counted by the "
                     "orchestrator since it started).", ["status"])
QUEUED_TO_RUNNING = Histogram("rgrid_run_queued_to_running_seconds",
                              "From submit (queued) to its first claim by a worker.", buckets=LATENCY_BUCKETS)
SUBMIT_TO_FINISHED = Histogram("rgrid_run_submit_to_finished_seconds",
                               "From submit (queued) to its final status.", buckets=LATENCY_BUCKETS)
FLEET_UPDATES = Histogram("rgrid_fleet_update_duration_seconds",
                          "Fleet updates (preview, then apply when something differs), by result: ok, error, busy.",
                          ["result"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
PROVIDER_ERRORS = Counter("rgrid_provider_errors", "Failed fleet updates by kind of provider error.", ["kind"])
ATTEMPTS_PRICED = Counter("rgrid_attempts_priced", "Ended attempts the cost tick priced.")

for _status in sorted(TERMINAL):
    RUNS_ENDED.labels(_status)
for _kind in ("quota", "unreachable", "transient", "other"):
    PROVIDER_ERRORS.labels(_kind)
for _result in ("ok", "error", "busy"):
    FLEET_UPDATES.labels(_result)

OVERLAP = timedelta(seconds=30)  # ends may become visible slightly out of their timestamps' order
BATCH = 5000


def fleet_update(result: str, seconds: float) -> None:
    FLEET_UPDATES.labels(result).observe(seconds)


def provider_error(error: BaseException) -> None:
    PROVIDER_ERRORS.labels(error_kind(error)).inc()


def serve(host: str, port: int) -> int:
    """Serve the default registry on host:port (0: a free port); returns the port."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


class RunObserver:
    """Feeds the run counters and histograms from the database, once per run."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._last_attempt: int | None = None  # the highest execution_attempts.id looked at
        self._ended_since = None
        self._seen: dict[int, object] = {}  # ended attempt ids counted, within the overlap

    def start(self) -> None:
        """Set the cursors at now: what happens from here on is counted (before the metrics are served)."""
        with self.engine.connect() as conn:
            self._last_attempt = conn.execute(select(func.max(ExecutionAttempt.id))).scalar() or 0
            self._ended_since = lifecycle.db_now(conn) - OVERLAP

    def tick(self) -> None:
        if self._last_attempt is None:
            self.start()  # the database was away when the orchestrator started
        with self.engine.connect() as conn:
            claims = conn.execute(
                select(ExecutionAttempt.id, ExecutionAttempt.attempt, ExecutionAttempt.started_at, Execution.queued_at)
                .join(Execution, Execution.id == ExecutionAttempt.execution_id)
                .where(ExecutionAttempt.id > self._last_attempt).order_by(ExecutionAttempt.id).limit(BATCH)
            ).all()
            ended = conn.execute(
                select(ExecutionAttempt.id, ExecutionAttempt.attempt, ExecutionAttempt.finished_at,
                       Execution.status, Execution.attempt.label("latest"), Execution.queued_at,
                       Execution.finished_at.label("run_finished_at"))
                .join(Execution, Execution.id == ExecutionAttempt.execution_id)
                .where(ExecutionAttempt.finished_at >= self._ended_since)
                .order_by(ExecutionAttempt.finished_at, ExecutionAttempt.id).limit(BATCH)
            ).all()
        for c in claims:
            if c.attempt == 1 and c.queued_at is not None:
                QUEUED_TO_RUNNING.observe(max(0.0, (c.started_at - c.queued_at).total_seconds()))
        if claims:
            self._last_attempt = claims[-1].id
        for e in ended:
            if e.id in self._seen:
                continue
            self._seen[e.id] = e.finished_at
            # The run ended with this attempt (a lost attempt that was queued again has not).
            if e.status in TERMINAL and e.attempt == e.latest:
                RUNS_ENDED.labels(e.status).inc()
                if e.queued_at is not None and e.run_finished_at is not None:
                    SUBMIT_TO_FINISHED.observe(max(0.0, (e.run_finished_at - e.queued_at).total_seconds()))
        if ended:
            newest = ended[-1].finished_at
            # Just before the newest on a full batch (see orchestrator/costs.JUST_BEFORE).
            self._ended_since = newest - JUST_BEFORE if len(ended) == BATCH else max(self._ended_since, newest - OVERLAP)
            self._seen = {i: at for i, at in self._seen.items() if at >= self._ended_since}

"""The API's Prometheus metrics: the queue and the fleet as they are now, read at each scrape.

Every figure is an indexed count, never a scan of history: runs per live status (uploading,
queued, running: range counts of the index on executions.status, as small as the queue), and
workers per state (the workers table holds one row per server ever made). How many runs ended,
and how long they took, the orchestrator counts as they happen (orchestrator/metrics.py).

Of the API itself: how long requests waited for a database connection (db/poolwait.py). With
several API processes (PROMETHEUS_MULTIPROC_DIR set, api/__main__.py) each writes its figures to
that folder and a scrape, whichever process answers it, adds up every process's.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rgrid_core.states import ExecutionStatus, WorkerState

from ..db import poolwait
from ..db.models import Execution, Worker

LIVE = (ExecutionStatus.UPLOADING, ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


class GridState:
    """A collector: each scrape reads the counts afresh."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        with self.engine.connect() as conn:
            runs = dict(conn.execute(select(Execution.status, func.count()).where(Execution.status.in_(LIVE))
                                     .group_by(Execution.status)).all())
            workers = dict(conn.execute(select(Worker.state, func.count()).group_by(Worker.state)).all())
        depth = GaugeMetricFamily("rgrid_queue_depth", "Runs queued and not yet claimed by a worker.")
        depth.add_metric([], runs.get(ExecutionStatus.QUEUED, 0))
        yield depth
        by_status = GaugeMetricFamily("rgrid_runs", "Runs not yet ended, by status.", labels=["status"])
        for status in LIVE:
            by_status.add_metric([status.value], runs.get(status, 0))
        yield by_status
        by_state = GaugeMetricFamily("rgrid_workers", "Worker records by state.", labels=["state"])
        for state in WorkerState:
            by_state.add_metric([state.value], workers.get(state, 0))
        yield by_state


def registry_for(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GridState(engine))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # every API process's figures, added up
    else:
        registry.register(poolwait.POOL_WAIT)
        registry.register(poolwait.POOL_WAIT_MAX)
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

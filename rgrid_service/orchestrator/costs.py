"""The cost tick: price every attempt that ended and has no cost yet (policies/costs), and keep each
execution's cost the sum of its attempts'.

The price table lives in the control plane only, so the orchestrator prices, not the runner. An
attempt's share is final when it ends, so each is priced once. The read is a range of the index on
execution_attempts.finished_at from a cursor, never a scan: at start the cursor is the newest
priced attempt's end (one backward step of that index; with none priced, the oldest end), then it
follows the newest end seen. It trails by OVERLAP, because ends are stamped by the database clock
when their transaction runs and may become visible slightly out of order; the `cost_eur IS NULL`
filter skips those done already. Attempts on workers without a price get 0 (the API says why), so
they are never read again.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine

from ..db.models import Execution, ExecutionAttempt
from ..db.session import write_tx
from ..fleet.prices import PriceTable
from ..fleet.spend import workers_by_id
from ..policies.costs import PricedWorker, Span, attempt_cost

log = logging.getLogger("rgrid.costs")

OVERLAP = timedelta(seconds=30)
# SQLite keeps times as text, the database clock's with 3 decimals, a bound parameter's with 6: a
# bound time equal to a stored one compares greater. So a cursor always sits a little before.
JUST_BEFORE = timedelta(milliseconds=1)
BATCH = 1000


class CostRecorder:
    def __init__(self, engine: Engine, prices: PriceTable, period: timedelta):
        self.engine = engine
        self.prices = prices
        self.period = period
        self._since = None  # attempts that ended at or after this are looked at

    def _start(self, conn):
        newest_priced = conn.execute(
            select(ExecutionAttempt.finished_at)
            .where(ExecutionAttempt.finished_at.is_not(None), ExecutionAttempt.cost_eur.is_not(None))
            .order_by(ExecutionAttempt.finished_at.desc()).limit(1)
        ).scalar()
        if newest_priced is not None:
            return newest_priced - OVERLAP
        oldest = conn.execute(select(func.min(ExecutionAttempt.finished_at))).scalar()  # all of history, once
        return None if oldest is None else oldest - OVERLAP

    def tick(self) -> int:
        """Price up to BATCH ended attempts; returns how many were priced."""
        with self.engine.connect() as conn:
            if self._since is None:
                self._since = self._start(conn)
                if self._since is None:
                    return 0  # no attempt has ended yet
            rows = conn.execute(
                select(ExecutionAttempt.id, ExecutionAttempt.execution_id, ExecutionAttempt.worker_id,
                       ExecutionAttempt.started_at, ExecutionAttempt.finished_at)
                .where(ExecutionAttempt.finished_at >= self._since, ExecutionAttempt.cost_eur.is_(None))
                .order_by(ExecutionAttempt.finished_at, ExecutionAttempt.id).limit(BATCH)
            ).all()
            workers = workers_by_id(conn, {r.worker_id for r in rows if r.worker_id}, self.prices)
        if not rows:
            return 0
        costs = [{"aid": r.id, "cost": self.cost(r, workers.get(r.worker_id))} for r in rows]
        executions = sorted({r.execution_id for r in rows})
        with write_tx(self.engine) as conn:
            conn.execute(update(ExecutionAttempt)
                         .where(ExecutionAttempt.id == bindparam("aid"), ExecutionAttempt.cost_eur.is_(None))
                         .values(cost_eur=bindparam("cost")), costs)
            total = (select(func.sum(ExecutionAttempt.cost_eur))
                     .where(ExecutionAttempt.execution_id == Execution.id).scalar_subquery())
            for i in range(0, len(executions), 500):
                conn.execute(update(Execution).where(Execution.id.in_(executions[i:i + 500])).values(cost_eur=total))
        newest = rows[-1].finished_at
        # Trail the newest end by OVERLAP even after a full batch: an attempt that ended earlier but
        # committed later is still ahead of the cursor, and the filter skips what is priced, so a
        # burst of equal ends still makes progress.
        self._since = max(self._since, newest - OVERLAP)
        return len(rows)

    def cost(self, row, worker: PricedWorker | None) -> float:
        if worker is None:
            return 0.0  # no worker record (it never ran anywhere we know): nothing to charge
        return round(attempt_cost(Span(row.worker_id, row.started_at, row.finished_at), worker, self.period,
                                  row.finished_at), 10)

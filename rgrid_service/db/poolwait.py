"""How long a request waited for a database connection: the connection pool's checkout, timed.

`TimedQueuePool` is SQLAlchemy's QueuePool (the pool of every engine make_engine builds) whose
checkout observes the wait, whether a free connection was at hand, a new one was opened, or all
were out and it waited for one to come back (up to the pool's timeout), into
`rgrid_db_pool_wait_seconds` and the longest so far into `rgrid_db_pool_wait_max_seconds`. The API
serves both (api/metrics.py); with several API processes prometheus-client's multiprocess mode adds
the histograms up and takes the largest maximum (api/__main__.py).
"""
from __future__ import annotations

import threading
import time

from prometheus_client import Gauge, Histogram
from sqlalchemy.pool import QueuePool

# Not in any registry: api/metrics.py registers them, or collects them from every process's files.
POOL_WAIT = Histogram(
    "rgrid_db_pool_wait_seconds", "Time a checkout waited for a database connection from the pool.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None)
POOL_WAIT_MAX = Gauge(
    "rgrid_db_pool_wait_max_seconds", "The longest wait for a database connection since the process started.",
    registry=None, multiprocess_mode="max")

_longest = 0.0
_longest_lock = threading.Lock()


def observe(waited: float) -> None:
    global _longest
    POOL_WAIT.observe(waited)
    if waited > _longest:
        with _longest_lock:
            if waited > _longest:
                _longest = waited
                POOL_WAIT_MAX.set(waited)


class TimedQueuePool(QueuePool):
    def _do_get(self):
        began = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            observe(time.perf_counter() - began)

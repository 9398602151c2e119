"""One way to retry, on tenacity: every loop that rides out an outage is written with this."""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_delay, wait_exponential

T = TypeVar("T")


def retrying(fn: Callable[[], T], *, seconds: float, when: Callable[[BaseException], bool] = lambda e: True,
             first_wait: float = 0.25, max_wait: float = 2.0, log: logging.Logger | None = None,
             what: str = "") -> T:
    """fn(), tried again while it raises an error for which `when` is true, for up to `seconds`;
    then the last error is raised as it was. Ctrl-C (KeyboardInterrupt) and SystemExit are never
    errors to ride out: tenacity hands them to `when` like any exception, and a `when` that says yes
    to everything (the default) kept a person's Ctrl-C waiting for the whole `seconds`."""
    for attempt in Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, Exception) and when(e)),
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        reraise=True,
        before_sleep=before_sleep_log(log, logging.WARNING) if log else None,
    ):
        with attempt:
            return fn()
    raise AssertionError("unreachable")  # pragma: no cover

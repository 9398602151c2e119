"""The chaos checker's reading of a lease-expired attempt's last renewal (tests.chaos.invariants)."""
from datetime import datetime

from tests.chaos.invariants import LEASE_EXPIRED, last_renewal

STARTED = datetime(2026, 11, 30, 11, 0, 0)


def test_the_renewal_named_in_the_reason_on_the_same_day():
    reason = f"attempt 1 on worker w-1 lost at 12:00:09: {LEASE_EXPIRED} at 11:59:58"
    assert last_renewal(reason, STARTED, datetime(2026, 11, 30, 12, 0, 9, 500)) == datetime(2026, 11, 30, 11, 59, 58)


def test_a_renewal_before_midnight_is_on_the_day_before():
    reason = f"attempt 1 on worker w-1 lost at 00:00:05: {LEASE_EXPIRED} at 23:59:55"
    assert last_renewal(reason, STARTED, datetime(2026, 12, 1, 0, 0, 5)) == datetime(2026, 11, 30, 23, 59, 55)


def test_a_run_that_never_renewed_counts_from_its_start():
    reason = f"attempt 2 on worker w-1 lost at 11:00:20: {LEASE_EXPIRED} at its start"
    assert last_renewal(reason, STARTED, datetime(2026, 11, 30, 11, 0, 20)) == STARTED

"""The worker's node command re-joins a restarted Ray head, with bounded retries (rgrid_runner.node)."""
import pytest

from rgrid_runner.node import REJOIN_MAX_WAIT, START_TRIES, START_WINDOW, next_wait

LONG, SHORT = START_WINDOW + 1, 5.0


@pytest.mark.parametrize(
    "ran_for, failures, joined_before, gives_up",
    [
        (LONG, 0, True, False),  # it ran, then its head went away: re-join at once
        (SHORT, 1, False, False),  # a first start that failed: try again
        (SHORT, START_TRIES, False, True),  # never got going: give up after START_TRIES
        (SHORT, START_TRIES, True, False),  # the head is still away after a restart: keep trying
        (SHORT, 6, True, True),  # ... but not for ever
    ],
)
def test_rejoin_rule(ran_for, failures, joined_before, gives_up):
    wait = next_wait(ran_for, failures, joined_before)
    assert (wait is None) is gives_up
    if wait is not None:
        assert 0 < wait <= REJOIN_MAX_WAIT


def test_a_node_that_ran_rejoins_within_two_seconds():
    assert next_wait(LONG, 0, True) <= 2

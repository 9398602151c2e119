"""The worker's node command re-joins a restarted Ray head, with bounded retries (rgrid_runner.node)."""
import signal
import subprocess
import sys

import pytest

from rgrid_runner.node import REJOIN_MAX_WAIT, START_TRIES, START_WINDOW, next_wait, stop_agent

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


def test_giving_up_stops_the_agent_it_started():
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stop_agent(agent)
    assert agent.returncode == -signal.SIGTERM


def test_an_agent_that_ignores_sigterm_is_killed():
    agent = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"], stdout=subprocess.PIPE)
    agent.stdout.readline()
    stop_agent(agent, grace=0.5)
    assert agent.returncode == -signal.SIGKILL

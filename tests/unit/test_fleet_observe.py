"""The pulumi fleet's observe() is read by other processes (the API's fleet preview, the tests) while
the orchestrator's update rewrites the state file; the engine then says "failed to load checkpoint:
EOF" (seen in the fleet tests). Such a read is tried again; any other error is not."""
from __future__ import annotations

import threading

import pytest
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from rgrid_service.fleet import pulumi as pulumi_fleet


class FlakyStack:
    def __init__(self, errors: list[str]):
        self.errors = errors
        self.reads = 0

    def outputs(self):
        self.reads += 1
        if self.errors:
            raise auto.CommandError(CommandResult(stdout="", stderr=self.errors.pop(0), code=1))
        return {"servers": auto.OutputValue({"w-1": 11}, secret=False)}


def fleet_with(stack: FlakyStack) -> pulumi_fleet.PulumiFleet:
    fleet = pulumi_fleet.PulumiFleet.__new__(pulumi_fleet.PulumiFleet)
    fleet._lock = threading.Lock()
    fleet._stack = lambda desired: stack
    return fleet


def test_a_state_file_caught_half_written_is_read_again():
    stack = FlakyStack(["error: failed to load checkpoint: EOF"] * 2)
    servers = fleet_with(stack).observe()
    assert [(s.worker_id, s.server_id) for s in servers] == [("w-1", "11")]
    assert stack.reads == 3


def test_other_errors_are_not_retried():
    stack = FlakyStack(["error: no stack named 'workers' found"])
    with pytest.raises(auto.CommandError):
        fleet_with(stack).observe()
    assert stack.reads == 1

"""The follow watcher's look failing (the database away): said once, not every tick, and said again
only once it works; the streams it could not look at are not woken meanwhile."""
from __future__ import annotations

import asyncio
import logging

from rgrid_service.api import follow


def test_a_failing_look_is_logged_once_and_its_recovery_once(monkeypatch, caplog):
    outcomes = [OSError("database away")] * 3 + [{}]

    def read_heads(engine, ids):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(follow, "read_heads", read_heads)

    async def scenario() -> list[bool]:
        watcher = follow.Watcher(engine=None, poll_seconds=60)  # ticks driven by hand below
        watch = watcher.watch("ex-1")
        watch.expect(("running", None, None, "w-1", 1), 0)
        woken = []
        for _ in range(4):
            await watcher.tick()
            woken.append(watch.changed.is_set())
        watcher.drop(watch)
        return woken

    with caplog.at_level(logging.INFO, logger="rgrid.api.follow"):
        woken = asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if m.startswith("Could not look")] == [messages[0]]
    assert messages.count("Looking at the followed runs again.") == 1
    assert woken == [False, False, False, True]  # the run is gone from the last look: woken to find out

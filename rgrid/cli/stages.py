"""Where a run is: what `rgrid run` shows while the run waits for capacity, and the stage
timeline `rgrid status` prints.

Waiting is shown only once a run has waited WAIT_QUIET seconds (most runs start sooner and show
nothing). On a terminal it is one rich spinner with the API's sentence and the time waited; when
stdout or stderr is not a terminal, each new stage is printed once as a plain line on stderr (a new
stage: another kind of wait, another worker, another provider error or try).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from rich.table import Table
from rich.text import Text

from .output import err, local_time, note, parse_time

WAIT_QUIET = 1.0  # seconds a run may wait before anything is shown


def elapsed(seconds: float, precise: bool = True) -> str:
    """`0.812 s` under ten seconds (whole seconds unless precise), `42 s`, `3 min 5 s`, `2 h 10 min`."""
    if seconds < 10 and precise:
        return f"{max(seconds, 0):.3f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"



def timeline_table(timeline: list[dict]) -> Table:
    """stage | when (local time) | time since the stage before, and a total line."""
    table = Table("stage", "at", "after", box=None, pad_edge=False, title="stages", title_justify="left")
    previous = None
    for step in timeline:
        moment = parse_time(step["at"])
        table.add_row(step["stage"], local_time(step["at"]),
                      "" if previous is None else "+" + elapsed((moment - previous).total_seconds()))
        previous = moment
    if len(timeline) > 1:
        table.add_row("total", "", elapsed((parse_time(timeline[-1]["at"]) - parse_time(timeline[0]["at"])).total_seconds()))
    return table


def stage_key(waiting: dict) -> tuple:
    """What makes a wait a new stage for the plain-line display: its kind, its worker and, for a
    provider error, the sentence itself (a new try is news); not the counters that tick."""
    return (waiting.get("kind"), waiting.get("worker_id"),
            waiting.get("sentence") if waiting.get("kind") == "provider" else None)


class WaitDisplay:
    """The spinner on a terminal, plain lines otherwise."""

    def __init__(self, live: bool | None = None):
        self.live = sys.stdout.isatty() and err.is_terminal if live is None else live
        self.status = None
        self.last_key: tuple | None = None
        self.shown = False

    def show(self, waiting: dict, waited: float) -> None:
        self.shown = True
        if not self.live:
            key = stage_key(waiting)
            if key != self.last_key:
                err.print(Text(waiting["sentence"]), highlight=False)
                self.last_key = key
            return
        line = Text.assemble(waiting["sentence"], (f"  · waited {elapsed(waited, precise=False)}", "dim"))
        if self.status is None:
            self.status = err.status(line, spinner="dots")
            self.status.start()
        else:
            self.status.update(line)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


class WaitWatch:
    """What `rgrid run` shows while its run waits, fed the status events of the run's follow
    stream (while queued, one every second or so, with what it waits for)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, display: WaitDisplay | None = None):
        self.clock = clock
        self.display = display or WaitDisplay()
        self.began = clock()
        self.started = False

    def seen(self, status: dict) -> None:
        if self.started:
            return
        if status["status"] == "queued":
            waited = self.clock() - self.began
            if waited >= WAIT_QUIET and status.get("waiting"):
                self.display.show(status["waiting"], waited)
            return
        self.started = True
        self.display.close()
        if self.display.shown and status.get("worker_id"):
            note(f"Started on worker {status['worker_id']} after {elapsed(self.clock() - self.began, precise=False)} "
                 "of waiting.")

    def close(self) -> None:
        self.display.close()

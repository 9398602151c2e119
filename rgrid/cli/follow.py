"""Following a run: its logs as they come, the exit code it ends with, and the one Ctrl-C prompt."""
from __future__ import annotations

import base64
import sys
from typing import Callable, NoReturn

import typer

from rgrid_core.constants import EXIT_CANCELED, EXIT_TIMED_OUT
from rgrid_core.states import ExecutionStatus as S

from .connect import call
from .output import error, fail, say


def exit_code_for(ex: dict) -> int:
    """What `rgrid run` (and `rgrid logs -f`) exit with once the run has ended."""
    status = ex["status"]
    if status == S.SUCCEEDED:
        return 0
    if status == S.FAILED:
        return ex["exit_code"] if ex.get("exit_code") not in (None, 0) else 1
    if status == S.TIMED_OUT:
        return EXIT_TIMED_OUT
    if status == S.CANCELED:
        return EXIT_CANCELED
    return 1


def write_chunk(chunk: dict) -> None:
    """One log chunk onto our stdout or stderr, raw bytes as the script wrote them."""
    stream = sys.stdout if chunk["stream"] == "stdout" else sys.stderr
    stream.buffer.write(base64.b64decode(chunk["data_b64"]))
    stream.flush()


def write_page(page: dict) -> None:
    for chunk in page["chunks"]:
        write_chunk(chunk)


def print_logs(c, execution_id: str) -> None:
    """Everything logged so far, page by page, then return."""
    after = 0
    while True:
        page = call(c.get, f"/v1/executions/{execution_id}/logs", after=after)
        write_page(page)
        after = page["next_after"]
        if page["finished"] or not page["chunks"]:
            return


def stream_logs(c, execution_id: str, on_status: Callable[[dict], None] | None = None) -> dict:
    """Write the logs as they come, over the run's follow stream (one connection, resumed from the
    last chunk after a drop: every byte once), until the run has ended and they are drained.
    Status events go to on_status; returns the final status ({status, exit_code, reason, …})."""
    for event in c.events(f"/v1/executions/{execution_id}/follow"):
        if event.name == "log":
            write_chunk(event.data)
        elif event.name == "status" and on_status is not None:
            on_status(event.data)
        elif event.name == "end":
            if on_status is not None:
                on_status(event.data)
            return event.data
    raise AssertionError("unreachable: the stream ends with an `end` event")  # pragma: no cover


def follow(c, execution_id: str, on_interrupt: Callable[[], NoReturn], show_waiting: bool = False) -> dict:
    """Stream the logs until the execution has ended and they are drained; returns its final
    status and says why on stderr when it did not succeed. With show_waiting, what the run waits
    for is shown until it starts (stages.py). Ctrl-C calls on_interrupt, which exits."""
    watch = None
    try:
        if show_waiting:
            from .stages import WaitWatch

            watch = WaitWatch()
        ex = call(stream_logs, c, execution_id, watch.seen if watch else None)
    except KeyboardInterrupt:
        if watch is not None:
            watch.close()  # the prompt must not fight the spinner
        on_interrupt()
    if watch is not None:
        watch.close()
    if ex["status"] != S.SUCCEEDED and ex.get("reason"):
        error(f"{execution_id} {ex['status']}: {ex['reason']}")
    return ex


# How long each step of the cancel request after Ctrl-C (connect, send, answer) may take: the user asked
# to get out, so a slow or unreachable API must not keep them (the client's usual bound is 30 s a step).
CANCEL_TIMEOUT = 10.0


def cancel_or_detach(question: str, cancel: Callable[[], str], detached: str, not_canceled: str) -> NoReturn:
    """Ctrl-C while following a run or a batch. On a terminal, ask `question` (c: cancel, the
    default; d: detach); otherwise cancel. Cancelling prints what cancel() returns and exits 130;
    detaching prints `detached` and exits 0. A cancel that fails (an ApiError, e.g. the API did not
    answer within CANCEL_TIMEOUT) or is interrupted by another Ctrl-C exits 1 at once with its
    reason and `not_canceled` (what may still run, and how to cancel it)."""
    from ..client import ApiError

    choice = "c"
    if sys.stdin.isatty():
        try:
            choice = typer.prompt(f"\n{question}", default="c")
        except (KeyboardInterrupt, EOFError, typer.Abort):  # a second Ctrl-C: cancel, the default
            choice = "c"
    if choice.strip().lower().startswith("d"):
        say(detached)
        raise typer.Exit(0)
    try:
        said = cancel()
    except ApiError as e:
        fail(f"Could not cancel: {e} {not_canceled}")
    except KeyboardInterrupt:
        fail(f"Stopped before the cancel was confirmed. {not_canceled}")
    say(said)
    raise typer.Exit(EXIT_CANCELED)


def stop_following() -> NoReturn:
    """Ctrl-C in `rgrid logs -f`: stop following, cancel nothing."""
    raise typer.Exit(EXIT_CANCELED)


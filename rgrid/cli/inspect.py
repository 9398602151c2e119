"""`rgrid status`, `list`, `logs`, `download` and `cancel`: looking at runs and batches after the fact."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import typer

from rgrid_core.states import TERMINAL, WITH_OUTPUTS

from . import connect
from .batch import BATCH_MAX, batch_executions, batch_input, cancel_batch, counts_line, is_batch_id, ordered_counts
from .connect import call
from .fetch import fetch_outputs
from .follow import exit_code_for, follow, print_logs, stop_following
from .output import eur, fail, local_time, note, out, say, warn

TIMES = ("created_at", "queued_at", "started_at", "finished_at")


def status(
    execution_id: Optional[str] = typer.Argument(None, help="The execution to show."),
    batch: Optional[str] = typer.Option(None, "--batch", metavar="BATCH_ID", help="Show a whole batch instead."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show one execution (status, worker, attempts, times), or with --batch a batch's counts and executions."""
    if (execution_id is None) == (batch is None):
        fail("Give either an execution id or --batch BATCH_ID (exactly one); `rgrid list` shows your executions.")
    if batch is not None:
        batch_status(batch, as_json)
        return
    ex = call(connect.client().get, f"/v1/executions/{execution_id}")
    if as_json:
        out.print_json(json.dumps(ex))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key in ("id", "status", "exit_code", "reason", "worker_id", "attempt", "runtime", "batch_id", *TIMES):
        if ex.get(key) is not None:
            # created_at with its whole fraction: it is what orders `rgrid list`.
            value = local_time(ex[key], 6 if key == "created_at" else 3) if key in TIMES else str(ex[key])
            table.add_row(key, value)
    table.add_row("command", shlex.join([ex["script"], *ex["args"]]))
    if ex["env_keys"]:
        table.add_row("env", ", ".join(ex["env_keys"]) + " (values hidden)")
    if ex.get("log_truncated"):
        table.add_row("logs", "truncated: the script wrote more than the log limit, and the rest was dropped")
    table.add_row("cost", " ".join(p for p in (eur(ex.get("cost_eur")), ex.get("cost_note") or "") if p))
    for a in ex.get("attempts", []):
        table.add_row(f"attempt {a['attempt']}", f"on {a['worker_id']}: {a['outcome'] or 'running'}"
                      + (f" ({a['reason']})" if a.get("reason") else ""))
    if ex.get("waiting"):
        table.add_row("waiting", ex["waiting"]["sentence"])
    out.print(table)
    if ex.get("timeline"):
        from .stages import timeline_table

        out.print(timeline_table(ex["timeline"]))


def batch_status(batch_id: str, as_json: bool):
    c = connect.client()
    view = call(c.get, f"/v1/batches/{batch_id}")  # counts over the whole batch, however large
    rows = batch_executions(c, batch_id)
    if len(rows) < view["total"]:
        warn(f"listing {len(rows)} of the batch's {view['total']} executions; the counts cover all of them.")
    if as_json:
        out.print_json(json.dumps({"batch": batch_id, "counts": ordered_counts(view["counts"]), "total": view["total"],
                                   "cost_eur": view.get("cost_eur"),
                                   "executions": [{**ex, "input": batch_input(ex)} for ex in rows]}))
        return
    from rich.table import Table

    cost = f"; cost {eur(view['cost_eur'])} so far" if view.get("cost_eur") is not None else ""
    out.print(f"Batch {batch_id}: {counts_line(view['counts'], view['total'])}{cost}", highlight=False)
    table = Table("id", "input", "status", "worker", "exit")
    for ex in rows:
        table.add_row(ex["id"], batch_input(ex), ex["status"], ex["worker_id"] or "",
                      "" if ex["exit_code"] is None else str(ex["exit_code"]))
    out.print(table)


def list_(
    as_json: bool = typer.Option(False, "--json"),
    status_filter: Optional[str] = typer.Option(None, "--status"),
    batch: Optional[str] = typer.Option(None, "--batch", metavar="BATCH_ID", help="Only this batch's executions."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, max=BATCH_MAX,
                                        help=f"At most this many, the newest (default 20; with --batch {BATCH_MAX})."),
    cursor: Optional[str] = typer.Option(None, "--cursor", help="Go on where a previous listing stopped (it prints "
                                         "the command)."),
):
    """List your executions, newest first, a page at a time (the next page's command comes last)."""
    if limit is None:
        limit = BATCH_MAX if batch else 20
    # The API answers newest first; shown in its order, never sorted again here.
    rows, next_cursor = call(connect.client().get_page, "/v1/executions", status=status_filter, batch=batch,
                             limit=limit, cursor=cursor)
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        from rich.table import Column, Table

        table = Table(Column("id", no_wrap=True), Column("status", no_wrap=True), "exit", "worker", "script",
                      Column("created", no_wrap=True), box=None, pad_edge=False)
        for ex in rows:
            table.add_row(ex["id"], ex["status"], "" if ex["exit_code"] is None else str(ex["exit_code"]),
                          ex["worker_id"] or "", ex["script"], local_time(ex["created_at"], 0))
        out.print(table)
    if next_cursor is not None:  # on stderr: --json's stdout stays one JSON document
        again = ["rgrid", "list", *(["--json"] if as_json else []),
                 *(["--status", status_filter] if status_filter else []),
                 *(["--batch", batch] if batch else []), "--limit", str(limit), "--cursor", next_cursor]
        note(f"Older ones: {shlex.join(again)}")


def logs(execution_id: str,
         follow_: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until it ends.")):
    """Print an execution's stdout and stderr (raw bytes, as the script wrote them).

    With --follow, stream them until the execution ends, then exit as `rgrid run` would: the script's exit code, 124 if it timed out, 130 if it was canceled, 1 otherwise. Ctrl-C stops following (exit 130) and cancels nothing.
    """  # noqa: E501 - one line per paragraph, as the help shows it
    c = connect.client()
    if follow_:
        raise typer.Exit(exit_code_for(follow(c, execution_id, on_interrupt=stop_following)))
    print_logs(c, execution_id)


def download(execution_id: str, output_dir: Optional[Path] = typer.Option(None, "--output-dir")):
    """Download an execution's output files (once it has ended)."""
    c = connect.client()
    ex = call(c.get, f"/v1/executions/{execution_id}")
    if ex["status"] not in TERMINAL:
        fail(f"{execution_id} is still {ex['status']}: its outputs come once it ends. Follow it with "
             f"`rgrid logs -f {execution_id}`, then `rgrid download {execution_id}`.")
    if ex["status"] not in WITH_OUTPUTS:
        fail(f"{execution_id} was {ex['status']}, so it has no outputs to download.")
    failures: list = []
    n = fetch_outputs(c, execution_id, output_dir or Path("rgrid-outputs") / execution_id, quiet=False,
                      failures=failures)
    if n == 0:
        say(f"{execution_id} ({ex['status']}) has no output files.")
    if failures:
        fail(f"{len(failures)} of {n} output file(s) could not be downloaded safely.")


def cancel(execution_id: str = typer.Argument(..., metavar="ID", help="An execution id (ex-…) or a batch id (b-…).")):
    """Cancel a queued or running execution, or every unfinished execution of a batch."""
    c = connect.client()
    if is_batch_id(execution_id):
        done = call(cancel_batch, c, execution_id)
        out.print(f"{execution_id}: canceled {done['canceled']} unfinished execution(s); now "
                  f"{counts_line(done['counts'], done['total'])}", highlight=False)
        return
    ex = call(c.post, f"/v1/executions/{execution_id}/cancel")
    out.print(f"{execution_id}: {ex['status']}", highlight=False)

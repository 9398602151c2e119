"""`rgrid run --batch GLOB`: one execution per matching file, queued in bulk, followed on one line;
and a batch as the API shows it (its executions, their inputs, its counts) and cancelling it."""
from __future__ import annotations

import glob
import os
import secrets
import tempfile
from pathlib import Path
from typing import Optional

import typer

from rgrid_core.names import dedupe, input_name_problem
from rgrid_core.states import STATUS_ORDER, TERMINAL, WITH_OUTPUTS
from rgrid_core.states import ExecutionStatus as S

from . import connect
from .connect import call
from .fetch import fetch_outputs
from .follow import CANCEL_TIMEOUT, cancel_or_detach
from .output import err, error, eur, fail, note, out, plural, say, warn
from .run import collect_inputs

BULK_CREATE = 500  # executions per POST /v1/executions/bulk
# The list endpoint answers at most this many rows, so a batch holds at most this many executions.
BATCH_MAX = 1000


def is_batch_id(value: str) -> bool:
    return value.startswith("b-")


def batch_executions(c, batch_id: str) -> list[dict]:
    """Every execution of a batch (the API answers at most BATCH_MAX), oldest first: the API's
    newest-first order reversed, never sorted again here."""
    return list(reversed(call(c.get, "/v1/executions", batch=batch_id, limit=BATCH_MAX)))


def batch_input(ex: dict) -> str:
    """The name (inside /work) of the file a batch execution ran on: its first argument."""
    first = ex["args"][0] if ex.get("args") else ""
    return first[len("/work/"):] if first.startswith("/work/") else first


def ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    """Per-status counts in lifecycle order (uploading … lost), as the API may send them in any."""
    rank = {st: i for i, st in enumerate(STATUS_ORDER)}
    return dict(sorted(counts.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def counts_line(counts: dict[str, int], total: int) -> str:
    return (", ".join(f"{n} {k}" for k, n in ordered_counts(counts).items())
            + f" ({total} execution{'s' if total != 1 else ''})")


def cancel_batch(c, batch_id: str, timeout: float | None = None) -> dict:
    """Cancel every unfinished execution of a batch in one request: {"canceled": n, "counts", "total", …}.
    Raises ApiError (404 with a sentence when the batch is not this key's)."""
    return c.post(f"/v1/batches/{batch_id}/cancel", timeout=timeout)


def check_pattern(pattern: str, script: str, args: list[str]) -> None:
    """Refuse an empty pattern, and one that the shell has already expanded: a --batch value without
    wildcards followed by more existing files (`--batch data/*.csv` unquoted reaches rgrid as
    `--batch data/a.csv data/b.csv … process.py`, the second file taken for the script)."""
    if not pattern.strip():
        fail("--batch needs a file pattern, for example --batch 'data/*.csv'.")
    if glob.has_magic(pattern) or not os.path.isfile(script):
        return
    more = [a for a in args if a and os.path.isfile(a)]
    if more:
        example = os.path.join(os.path.dirname(pattern), "*" + Path(pattern).suffix)
        fail(f"--batch {pattern!r} has no wildcard but more files follow it ({script}, {more[0]}, …): your shell "
             f"expanded the pattern before rgrid saw it, so nothing was queued. Quote the pattern, for example "
             f"--batch '{example}'. (To run a single file, leave out --batch.)")


def expand_batch(pattern: str) -> list[str]:
    """The files a batch runs on: the glob expanded here (`**` recurses), sorted; fails with a sentence."""
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        fail(f"No file matches --batch {pattern!r} (relative to {os.getcwd()}), so nothing was queued. "
             "Check the pattern, and quote it so that your shell leaves it alone: --batch 'data/*.csv'.")
    if len(matches) > BATCH_MAX:
        fail(f"--batch {pattern!r} matches {len(matches)} files, but a batch holds at most {BATCH_MAX} for now; "
             "nothing was queued. Split it into smaller batches with narrower patterns.")
    if not glob.has_magic(pattern):
        warn(f"--batch {pattern!r} has no wildcard, so the batch has one file. "
             "If your shell expanded a pattern, quote it: --batch 'data/*.csv'.")
    return matches


def new_batch_id() -> str:
    return "b-" + secrets.token_hex(5)


def output_folders(files: list[str]) -> dict[str, str]:
    """input path -> its output folder name: the base name without extension, deduplicated in order."""
    taken: set[str] = set()
    folders = {}
    for f in files:
        stem = Path(os.path.abspath(f)).stem
        if input_name_problem(stem):  # cannot happen for a real file name; stay safe anyway
            stem = "input"
        folders[f] = dedupe(stem, taken)
        taken.add(folders[f])
    return folders


def submit_batch(c, script: str, files: list[str], script_args: list[str], env: dict[str, str],
                 runtime: str, timeout: Optional[int], batch_id: str, parallel: Optional[int],
                 ids: dict[str, str], on_queued, requirements: Optional[str] = None) -> None:
    """Queue one execution per file, recording each in ids (execution id -> file) as it is created.

    Every local file is checksummed once however many executions send it (the script), the
    executions are created BULK_CREATE per request, and only inputs the grid does not hold yet are
    uploaded; an execution whose inputs are all held is queued by its create. The caller cancels
    whatever was queued if anything fails."""
    from ..transfer import TransferError, prepare, send

    with tempfile.TemporaryDirectory(prefix="rgrid-") as tmp:
        prepared: dict[tuple[Path, str], object] = {}
        plans = []
        for f in files:
            script_name, rewritten, inputs = collect_inputs(script, [f, *script_args])
            items = []
            for name, src in inputs:
                key = (src.resolve(), name)
                if key not in prepared:
                    folder = Path(tmp) / str(len(prepared))  # folders of one name must not share a tar
                    folder.mkdir()
                    try:
                        prepared[key] = prepare(name, src, folder)
                    except TransferError as e:
                        fail(str(e))
                items.append(prepared[key])
            plans.append((f, script_name, rewritten, items))
        extra = {"batch_parallel": parallel} if parallel else {}
        for start in range(0, len(plans), BULK_CREATE):
            chunk = plans[start:start + BULK_CREATE]
            created = call(c.post, "/v1/executions/bulk", json={"executions": [
                dict(script=script_name, args=rewritten, env=env, runtime=runtime, requirements=requirements,
                     timeout_seconds=timeout,
                     inputs=[i.spec() for i in items], batch_id=batch_id, submit=True, **extra)
                for _f, script_name, rewritten, items in chunk
            ]})["created"]
            for (f, _name, _args, _items), one in zip(chunk, created):
                ids[one["id"]] = f
            for (f, _name, _args, items), one in zip(chunk, created):
                if one["status"] != S.QUEUED:
                    urls = {u["name"]: u for u in one["uploads"]}
                    for item in items:
                        if item.name in urls:
                            try:
                                send(urls[item.name], item)
                            except Exception as e:  # noqa: BLE001 - any failed upload: the batch is not queued
                                fail(f"Upload of {item.source} failed ({e}); try again.")
                    call(c.post, f"/v1/executions/{one['id']}/submit")
                on_queued()


def run_batch(script: str, pattern: str, parallel: Optional[int], script_args: list[str], env: dict[str, str],
              runtime: str, timeout: Optional[int], detach: bool, output_dir: Optional[Path], no_download: bool,
              requirements: Optional[str] = None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    files = expand_batch(pattern)
    for f in files:  # every argument problem is found before anything is queued
        collect_inputs(script, [f, *script_args])
    c = connect.client(start_local=True)
    batch_id = new_batch_id()
    ids: dict[str, str] = {}  # execution id -> input path
    try:
        with Progress(TextColumn(f"Queueing batch {batch_id}"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("", total=len(files))
            submit_batch(c, script, files, script_args, env, runtime, timeout, batch_id, parallel, ids,
                         on_queued=lambda: bar.advance(task), requirements=requirements)
    except (KeyboardInterrupt, typer.Exit) as e:
        unqueue(c, batch_id, bool(ids))  # all or nothing
        raise typer.Exit(130 if isinstance(e, KeyboardInterrupt) else 1)
    limit = f", at most {parallel} at a time" if parallel else ""
    say(f"Batch {batch_id}: {plural(len(files), 'execution')} queued{limit}.")
    if detach:
        out.print(batch_id, highlight=False)
        note(f"Follow it with `rgrid status --batch {batch_id}`; `rgrid cancel {batch_id}` cancels it.")
        return
    rows = follow_batch(c, batch_id, len(files))
    by_id = {ex["id"]: ex for ex in rows}
    if not no_download:
        root = output_dir or Path("rgrid-outputs") / batch_id
        folders = output_folders(files)
        wanted = [(i, f) for i, f in ids.items() if by_id.get(i, {}).get("status") in WITH_OUTPUTS]
        fetched = 0
        with Progress(TextColumn("Downloading outputs"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=True) as bar:
            task = bar.add_task("", total=len(wanted))
            for i, f in wanted:
                if fetch_outputs(c, i, root / folders[f], quiet=True):
                    fetched += 1
                bar.advance(task)
        if fetched:
            note(f"Outputs of {fetched} execution(s) in {root}/<input name>/")
    bad = [i for i in ids if by_id.get(i, {}).get("status") != S.SUCCEEDED]
    if not bad:
        say(f"All {len(ids)} executions of batch {batch_id} succeeded.")
        raise typer.Exit(0)
    error(f"{len(bad)} of {len(ids)} executions of batch {batch_id} did not succeed:")
    for i in bad:
        ex = by_id.get(i) or {"status": "unknown", "reason": "the API did not return it"}
        say(f"  {ids[i]}  {i}  {ex['status']}  {ex.get('reason') or ''}".rstrip())
    say("See a script's output with `rgrid logs <execution id>`.")
    raise typer.Exit(1)


def unqueue(c, batch_id: str, created: bool) -> None:
    """Queueing the batch failed or was interrupted: cancel whatever of it was queued, in one request."""
    from ..client import ApiError

    if not created:
        say(f"Batch {batch_id} was not queued.")
        return
    try:
        n = cancel_batch(c, batch_id)["canceled"]
    except ApiError as e:
        warn(f"could not cancel what was queued of batch {batch_id}: {e} Cancel it with `rgrid cancel {batch_id}`.")
        return
    say(f"Batch {batch_id} was not queued" + (f"; canceled its {n} execution(s) already queued." if n else "."))


def progress_line(counts: dict[str, int], cost_eur: float | None = None) -> str:
    done = counts.get(S.SUCCEEDED, 0)
    failed = sum(n for st, n in counts.items() if st in TERMINAL and st != S.SUCCEEDED)
    queued = counts.get(S.QUEUED, 0) + counts.get(S.UPLOADING, 0)
    cost = f"  cost {eur(cost_eur)}" if cost_eur else ""
    return f"queued {queued}  running {counts.get(S.RUNNING, 0)}  done {done}  failed {failed}{cost}"


def follow_batch(c, batch_id: str, total: int) -> list[dict]:
    """One progress line for the whole batch until every execution has ended, fed by the batch's
    follow stream (one connection; counts only, however large the batch; the rows once at the
    end); Ctrl-C cancels or detaches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        with Progress(TextColumn(f"Batch {batch_id}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("", total=total, counts=progress_line({S.QUEUED: total}))
            call(show_progress, c, batch_id, lambda view: bar.update(
                task, completed=sum(n for st, n in view["counts"].items() if st in TERMINAL),
                counts=progress_line(view["counts"], view.get("cost_eur"))))
            return batch_executions(c, batch_id)
    except KeyboardInterrupt:
        def cancel() -> str:
            n = cancel_batch(c, batch_id, timeout=CANCEL_TIMEOUT)["canceled"]
            return f"Canceled {n} unfinished execution(s) of batch {batch_id}."

        cancel_or_detach("Cancel the batch's unfinished executions (c) or detach and leave them running (d)?",
                         cancel, f"Detached. Follow it with `rgrid status --batch {batch_id}`; "
                         f"`rgrid cancel {batch_id}` cancels it.",
                         f"Batch {batch_id} may still run: cancel it with `rgrid cancel {batch_id}`.")


def show_progress(c, batch_id: str, show) -> None:
    """Hand each view of the batch's counts to show() until every execution has ended."""
    for event in c.events(f"/v1/batches/{batch_id}/follow"):
        show(event.data)
        if event.name == "end":
            return

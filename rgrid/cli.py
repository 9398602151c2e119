"""`rgrid`: run a script on the grid as you would run it locally."""
from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .client import ApiError, Client
from .config import Endpoint, remote_endpoint, rgrid_home
from rgrid_core.constants import EXIT_CANCELED, EXIT_TIMED_OUT
from rgrid_core.names import dedupe, input_name_problem
from rgrid_core.runtimes import DEFAULT_RUNTIME, SUPPORTED_RUNTIMES
from rgrid_core.states import STATUS_ORDER, TERMINAL
from .transfer import TransferError, download, prepare, safe_target, upload

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
local_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage the local grid on this machine.")
app.add_typer(local_app, name="local")
err = Console(stderr=True, soft_wrap=True)  # sentences stay on one line when piped
out = Console()

# The list endpoint answers at most this many rows, so a batch holds at most this many executions.
BATCH_MAX = 1000
MAX_PARALLEL = 10000


def fail(message: str, code: int = 1):
    err.print(f"[red]rgrid:[/red] {message}", highlight=False)
    raise typer.Exit(code)


# ---------------------------------------------------------------- endpoint / local grid


def _local_grid():
    try:
        from rgrid_service.localgrid import grid
    except ImportError:
        fail("The local grid needs the service components. Install them with `pip install 'rgrid[service]'` "
             "or point RGRID_API_URL at a control plane.")
    return grid


def endpoint(start_local: bool = True) -> Endpoint:
    remote = remote_endpoint()
    if remote:
        return remote
    grid = _local_grid()
    home = rgrid_home()
    state = grid.is_running(home)
    if state is None:
        if not start_local:
            fail("No local grid is running and no remote control plane is configured. Start one with `rgrid local up`.")
        with err.status("No control plane configured: starting a local grid on this machine…") as status:
            try:
                state = grid.up(home, workers=2, on_step=lambda s: status.update(f"Starting local grid: {s}…"))
            except Exception as e:  # noqa: BLE001
                fail(f"Could not start the local grid: {e} Logs are in {home / 'local' / 'logs'}.")
        err.print(f"Local grid started ({len(state.workers())} workers). Stop it with `rgrid local down`.")
    return Endpoint(state.api_url, state.api_key, local=True)


def client(start_local: bool = False) -> Client:
    ep = endpoint(start_local)
    return Client(ep.api_url, ep.api_key)


def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ApiError as e:
        fail(str(e))


# ---------------------------------------------------------------- run


def collect_inputs(script: str, args: list[str]) -> tuple[str, list[str], list[tuple[str, Path]]]:
    """Decide which arguments are local files/folders; returns (script name, rewritten args, inputs)."""
    script_path = Path(script)
    if not script_path.is_file():
        fail(f"Script {script!r} not found. Check the path (it is relative to {os.getcwd()}).")
    if not os.access(script_path, os.R_OK):
        fail(f"Script {script!r} is not readable; check its permissions.")
    by_source: dict[Path, str] = {}
    inputs: list[tuple[str, Path]] = []
    taken: set[str] = set()

    def add(path: Path) -> str:
        key = path.resolve()
        if key in by_source:
            return by_source[key]
        base = Path(os.path.abspath(path)).name  # the name the user gave, even for a symlink
        if input_name_problem(base):
            fail(f"Cannot send {str(path)!r}: its name {input_name_problem(base)}.")
        name = dedupe(base, taken)
        taken.add(name)
        by_source[key] = name
        inputs.append((name, path))
        return name

    script_name = add(script_path)
    rewritten = []
    for arg in args:
        if arg and os.path.exists(arg):
            path = Path(arg)
            if not os.access(path, os.R_OK):
                fail(f"Input {arg!r} is not readable; check its permissions. Nothing was queued.")
            rewritten.append(f"/work/{add(path)}")
        else:
            rewritten.append(arg)
    return script_name, rewritten, inputs


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair.split('=')[0]!r} must look like KEY=VALUE.")
        env[key] = value
    return env


def submit(c: Client, script: str, args: list[str], env: dict[str, str], runtime: str,
           timeout: Optional[int], batch_id: Optional[str] = None, quiet: bool = False,
           batch_parallel: Optional[int] = None) -> dict:
    """Upload every input the grid does not already hold (by content), then queue the execution.
    Nothing is queued if any upload fails."""
    script_name, rewritten, inputs = collect_inputs(script, args)
    with tempfile.TemporaryDirectory(prefix="rgrid-") as tmp:
        try:
            prepared = [prepare(name, src, Path(tmp)) for name, src in inputs]
        except TransferError as e:
            fail(str(e))
        created = call(c.post, "/v1/executions", json=dict(
            script=script_name, args=rewritten, env=env, runtime=runtime, timeout_seconds=timeout,
            inputs=[p.spec() for p in prepared], batch_id=batch_id, submit=True,
            **({"batch_parallel": batch_parallel} if batch_parallel else {}),
        ))
        if created["status"] == "queued":
            return created  # every input was already on the grid (same content): nothing to upload
        urls = {u["name"]: u["url"] for u in created["uploads"]}
        prepared = [p for p in prepared if p.name in urls]
        total = sum(p.size for p in prepared)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True, disable=quiet or total < 1024 * 1024) as bar:
            task = bar.add_task(f"Uploading {len(prepared)} file(s)", total=total)
            for item in prepared:
                try:
                    upload(urls[item.name], item, progress=lambda n: bar.advance(task, n))
                except KeyboardInterrupt:
                    call(c.post, f"/v1/executions/{created['id']}/cancel")
                    fail("Interrupted during the upload; nothing was queued.", EXIT_CANCELED)
                except Exception as e:  # noqa: BLE001 - any failed upload: queue nothing, say which
                    call(c.post, f"/v1/executions/{created['id']}/cancel")
                    fail(f"Upload of {item.source} failed ({e}). Nothing was queued; try again.")
    return call(c.post, f"/v1/executions/{created['id']}/submit")


BULK_CREATE = 500  # executions per POST /v1/executions/bulk


def submit_batch(c: Client, script: str, files: list[str], script_args: list[str], env: dict[str, str],
                 runtime: str, timeout: Optional[int], batch_id: str, parallel: Optional[int],
                 ids: dict[str, str], on_queued) -> None:
    """Queue one execution per file, recording each in ids (execution id -> file) as it is created.

    Every local file is checksummed once however many executions send it (the script), the
    executions are created BULK_CREATE per request, and only inputs the grid does not hold yet are
    uploaded; an execution whose inputs are all held is queued by its create. The caller cancels
    whatever was queued if anything fails."""
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
                dict(script=script_name, args=rewritten, env=env, runtime=runtime, timeout_seconds=timeout,
                     inputs=[i.spec() for i in items], batch_id=batch_id, submit=True, **extra)
                for _f, script_name, rewritten, items in chunk
            ]})["created"]
            for (f, _name, _args, items), one in zip(chunk, created):
                ids[one["id"]] = f
            for (f, _name, _args, items), one in zip(chunk, created):
                if one["status"] != "queued":
                    urls = {u["name"]: u["url"] for u in one["uploads"]}
                    for item in items:
                        if item.name in urls:
                            try:
                                upload(urls[item.name], item)
                            except Exception as e:  # noqa: BLE001 - any failed upload: the batch is not queued
                                fail(f"Upload of {item.source} failed ({e}); try again.")
                    call(c.post, f"/v1/executions/{one['id']}/submit")
                on_queued()


RUN_HELP = "\n\n".join([
    "Run SCRIPT with ARGS on the grid, as `python SCRIPT ARGS` would run locally.",
    "rgrid's own options go before SCRIPT; everything after SCRIPT goes to the script, like `docker run`. "
    "One exception: --batch GLOB and --parallel N may also come right after SCRIPT, before any script argument: "
    "`rgrid run process.py --batch 'data/*.csv' --parallel 4 --top 5` is the same as "
    "`rgrid run --batch 'data/*.csv' --parallel 4 process.py --top 5`. Only those leading occurrences are "
    "rgrid's, and a leading --parallel only when the run is a batch.",
    "If the first script argument is `--`, it is dropped and everything after it goes to the script verbatim: "
    "`rgrid run tool.py -- --batch x` runs `tool.py --batch x` once, and "
    "`rgrid run tool.py --batch 'data/*.csv' -- --batch x` gives every execution of the batch `--batch x`.",
    "A batch runs SCRIPT once per match of GLOB (expanded by rgrid, sorted), with the matched file as the "
    "first argument followed by the other ARGS. It shows one progress line (queued/running/done/failed) "
    "instead of the scripts' output, downloads each execution's outputs into "
    "OUTPUT_DIR/<input name without extension>/ (default ./rgrid-outputs/<batch id>), and exits 1 listing "
    "the executions that did not succeed. `rgrid status --batch ID` and `rgrid list --batch ID` show it later.",
])


@app.command(help=RUN_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                              "allow_interspersed_args": False})
def run(
    script: str = typer.Argument(..., help="The Python script to run."),
    args: Optional[list[str]] = typer.Argument(None, help="Arguments for the script; existing files are uploaded."),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the script's environment (repeatable)."),
    runtime: str = typer.Option(DEFAULT_RUNTIME, "--runtime", help=f"One of: {', '.join(SUPPORTED_RUNTIMES)}."),
    timeout: Optional[int] = typer.Option(None, "--timeout", help="Wall-clock limit in seconds (per execution)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the execution (or batch) id and return at once."),
    output_dir: Optional[Path] = typer.Option(
        None, "--output-dir",
        help="Where outputs go (default ./rgrid-outputs/<id>; for a batch, one folder per input inside it)."),
    no_download: bool = typer.Option(False, "--no-download", help="Leave outputs in the grid (rgrid download ID)."),
    batch: Optional[str] = typer.Option(
        None, "--batch", metavar="GLOB",
        help="Run SCRIPT once per file matching GLOB (quoted; ** recurses), the file being its first argument."),
    parallel: Optional[int] = typer.Option(
        None, "--parallel", metavar="N", min=1, max=MAX_PARALLEL,
        help="With --batch: at most N executions of the batch run at once."),
):
    if runtime not in SUPPORTED_RUNTIMES:
        fail(f"Unknown runtime {runtime!r}. Valid runtimes: {', '.join(SUPPORTED_RUNTIMES)}.")
    env_vars = parse_env(env)
    batch, parallel, script_args = split_run_args(list(args or []), batch, parallel)
    if batch is not None:
        run_batch(script, batch, parallel, script_args, env_vars, runtime, timeout,
                  detach=detach, output_dir=output_dir, no_download=no_download)
        return
    c = client(start_local=True)
    ex = submit(c, script, script_args, env_vars, runtime, timeout)
    if detach:
        out.print(ex["id"], highlight=False)
        return
    err.print(f"[dim]Execution {ex['id']} queued.[/dim]", highlight=False)
    final = follow(c, ex["id"], interactive_interrupt=True)
    failures: list = []
    if not no_download and final["status"] in ("succeeded", "failed", "timed_out"):
        fetch_outputs(c, final["id"], output_dir or Path("rgrid-outputs") / final["id"], quiet=False,
                      failures=failures)
    code = exit_code_for(final)
    if failures and code == 0:
        fail(f"{len(failures)} output file(s) could not be downloaded; try `rgrid download {final['id']}`.")
    raise typer.Exit(code)


def parse_parallel(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PARALLEL:
        fail(f"--parallel takes a whole number from 1 to {MAX_PARALLEL}, not {value!r}.")
    return n


def split_run_args(args: list[str], batch: Optional[str], parallel: Optional[int]
                   ) -> tuple[Optional[str], Optional[int], list[str]]:
    """Take the leading `--batch GLOB` / `--parallel N` that follow the script; returns (batch, parallel, script args).

    Only options that come right after the script, before any script argument, are rgrid's; a
    leading `--parallel` only when the run is a batch (else it is the script's, as it always was).
    A first script argument `--` is dropped and everything after it is the script's, verbatim.
    """
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name not in ("--batch", "--parallel"):
            break
        if not eq:
            if i + 1 >= len(args):
                fail(f"{name} needs a value: {'--batch GLOB' if name == '--batch' else '--parallel N'}.")
            value = args[i + 1]
            i += 1
        if name in found:
            fail(f"{name} is given twice; give it once.")
        found[name] = value
        i += 1
    if batch is None and "--batch" not in found:
        # Not a batch: whatever follows the script is the script's (even a leading --parallel).
        found, i = {}, 0
    for name, before in (("--batch", batch), ("--parallel", parallel)):
        if name in found and before is not None:
            fail(f"{name} is given both before and after the script; give it once.")
    rest = args[i:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    batch = found.get("--batch", batch)
    if "--parallel" in found:
        parallel = parse_parallel(found["--parallel"])
    if batch is not None and not batch.strip():
        fail("--batch needs a file pattern, for example --batch 'data/*.csv'.")
    if parallel is not None and batch is None:
        fail("--parallel limits a batch: add --batch GLOB (for example --batch 'data/*.csv').")
    return batch, parallel, rest


def exit_code_for(ex: dict) -> int:
    status = ex["status"]
    if status == "succeeded":
        return 0
    if status == "failed":
        return ex["exit_code"] if ex.get("exit_code") not in (None, 0) else 1
    if status == "timed_out":
        return EXIT_TIMED_OUT
    if status == "canceled":
        return EXIT_CANCELED
    return 1


def follow(c: Client, execution_id: str, interactive_interrupt: bool = False) -> dict:
    """Stream logs until the execution ends; Ctrl-C asks whether to cancel or detach."""
    after = 0
    try:
        while True:
            page = call(c.get, f"/v1/executions/{execution_id}/logs", after=after)
            for chunk in page["chunks"]:
                data = base64.b64decode(chunk["data_b64"])
                stream = sys.stdout if chunk["stream"] == "stdout" else sys.stderr
                stream.buffer.write(data)
                stream.flush()
            after = page["next_after"]
            if page["finished"]:
                break
            if not page["chunks"]:
                time.sleep(0.2)
    except KeyboardInterrupt:
        if not interactive_interrupt:
            raise typer.Exit(EXIT_CANCELED)
        if sys.stdin.isatty():
            choice = typer.prompt("\nCancel the execution (c) or detach and leave it running (d)?", default="c")
        else:
            choice = "c"
        if choice.lower().startswith("d"):
            err.print(f"Detached. Follow it with `rgrid logs {execution_id} --follow`.")
            raise typer.Exit(0)
        call(c.post, f"/v1/executions/{execution_id}/cancel")
        err.print(f"Canceled {execution_id}.")
        raise typer.Exit(EXIT_CANCELED)
    ex = call(c.get, f"/v1/executions/{execution_id}")
    if ex["status"] != "succeeded" and ex.get("reason"):
        err.print(f"[red]rgrid:[/red] {execution_id} {ex['status']}: {ex['reason']}", highlight=False)
    return ex


def fetch_outputs(c: Client, execution_id: str, target: Path, quiet: bool, failures: list | None = None) -> int:
    """Download every output under target; returns how many there were. Each output that could
    not be fetched safely is reported and appended to `failures`."""
    failures = failures if failures is not None else []
    outputs = call(c.get, f"/v1/executions/{execution_id}/outputs")
    if not outputs:
        return 0
    total = sum(o["size"] for o in outputs)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err,
                  transient=True, disable=quiet or total < 1024 * 1024) as bar:
        task = bar.add_task(f"Downloading {len(outputs)} output(s)", total=total)
        for o in outputs:
            try:
                dest = safe_target(target, o["path"])
                download(o["url"], dest, o["sha256"], progress=lambda n: bar.advance(task, n))
            except TransferError as e:
                failures.append((execution_id, o["path"], str(e)))
                err.print(f"[yellow]rgrid:[/yellow] {e}", highlight=False)
    if not quiet:
        err.print(f"[dim]{len(outputs)} output file(s) in {target}/[/dim]", highlight=False)
    return len(outputs)


# ---------------------------------------------------------------- batches


def expand_batch(pattern: str) -> list[str]:
    """The files a batch runs on: the glob expanded here (`**` recurses), sorted; fails with a sentence."""
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        fail(f"No file matches --batch {escape(repr(pattern))} (relative to {os.getcwd()}), so nothing was queued. "
             "Check the pattern, and quote it so that your shell leaves it alone: --batch 'data/*.csv'.")
    if len(matches) > BATCH_MAX:
        fail(f"--batch {escape(repr(pattern))} matches {len(matches)} files, but a batch holds at most {BATCH_MAX} for now; "
             "nothing was queued. Split it into smaller batches with narrower patterns.")
    if not glob.has_magic(pattern):
        err.print(f"[yellow]rgrid:[/yellow] --batch {escape(repr(pattern))} has no wildcard, so the batch has one file. "
                  "If your shell expanded a pattern, quote it: --batch 'data/*.csv'.", highlight=False)
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


def batch_executions(c: Client, batch_id: str) -> list[dict]:
    """Every execution of a batch (the API answers at most BATCH_MAX), oldest first."""
    rows = call(c.get, "/v1/executions", batch=batch_id, limit=BATCH_MAX)
    return sorted(rows, key=lambda ex: (str(ex.get("queued_at") or ex.get("created_at") or ""), ex["id"]))


def batch_input(ex: dict) -> str:
    """The name (inside /work) of the file a batch execution ran on: its first argument."""
    first = ex["args"][0] if ex.get("args") else ""
    return first[len("/work/"):] if first.startswith("/work/") else first


def ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    """Per-status counts in lifecycle order (uploading … lost), as the API may send them in any."""
    rank = {st: i for i, st in enumerate(STATUS_ORDER)}
    return dict(sorted(counts.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def cancel_unfinished(c: Client, batch_id: str) -> int:
    n = 0
    for ex in batch_executions(c, batch_id):
        if ex["status"] not in TERMINAL:
            try:
                c.post(f"/v1/executions/{ex['id']}/cancel")
                n += 1
            except ApiError as e:
                err.print(f"[yellow]rgrid:[/yellow] could not cancel {ex['id']}: {e}", highlight=False)
    return n


def run_batch(script: str, pattern: str, parallel: Optional[int], script_args: list[str], env: dict[str, str],
              runtime: str, timeout: Optional[int], detach: bool, output_dir: Optional[Path], no_download: bool):
    files = expand_batch(pattern)
    for f in files:  # every argument problem is found before anything is queued
        collect_inputs(script, [f, *script_args])
    c = client(start_local=True)
    batch_id = new_batch_id()
    ids: dict[str, str] = {}  # execution id -> input path
    try:
        with Progress(TextColumn(f"Queueing batch {batch_id}"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("", total=len(files))
            submit_batch(c, script, files, script_args, env, runtime, timeout, batch_id, parallel, ids,
                         on_queued=lambda: bar.advance(task))
    except (KeyboardInterrupt, typer.Exit) as e:
        # All or nothing: whatever of the batch was already queued is canceled.
        n = cancel_unfinished(c, batch_id)
        err.print(f"Batch {batch_id} was not queued" + (f"; canceled its {n} execution(s) already queued." if n else "."),
                  highlight=False)
        raise typer.Exit(EXIT_CANCELED if isinstance(e, KeyboardInterrupt) else 1)
    limit = f", at most {parallel} at a time" if parallel else ""
    err.print(f"Batch {batch_id}: {len(files)} execution{'s' if len(files) != 1 else ''} queued{limit}.",
              highlight=False)
    if detach:
        out.print(batch_id, highlight=False)
        err.print(f"[dim]Follow it with `rgrid status --batch {batch_id}`.[/dim]", highlight=False)
        return
    rows = follow_batch(c, batch_id, len(files))
    by_id = {ex["id"]: ex for ex in rows}
    if not no_download:
        root = output_dir or Path("rgrid-outputs") / batch_id
        folders = output_folders(files)
        wanted = [(i, f) for i, f in ids.items() if by_id.get(i, {}).get("status") in ("succeeded", "failed", "timed_out")]
        fetched = 0
        with Progress(TextColumn("Downloading outputs"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=True) as bar:
            task = bar.add_task("", total=len(wanted))
            for i, f in wanted:
                if fetch_outputs(c, i, root / folders[f], quiet=True):
                    fetched += 1
                bar.advance(task)
        if fetched:
            err.print(f"[dim]Outputs of {fetched} execution(s) in {escape(str(root))}/<input name>/[/dim]", highlight=False)
    bad = [i for i in ids if by_id.get(i, {}).get("status") != "succeeded"]
    if not bad:
        err.print(f"All {len(ids)} executions of batch {batch_id} succeeded.", highlight=False)
        raise typer.Exit(0)
    err.print(f"[red]rgrid:[/red] {len(bad)} of {len(ids)} executions of batch {batch_id} did not succeed:",
              highlight=False)
    for i in bad:
        ex = by_id.get(i) or {"status": "unknown", "reason": "the API did not return it"}
        err.print(f"  {ids[i]}  {i}  {ex['status']}  {ex.get('reason') or ''}".rstrip(), highlight=False,
                  soft_wrap=True, markup=False)
    err.print("See a script's output with `rgrid logs <execution id>`.", highlight=False)
    raise typer.Exit(1)


def follow_batch(c: Client, batch_id: str, total: int) -> list[dict]:
    """One progress line for the whole batch until every execution has ended; Ctrl-C cancels or detaches."""
    def summary(counts: dict[str, int]) -> str:
        done = counts.get("succeeded", 0)
        failed = sum(counts.get(k, 0) for k in ("failed", "timed_out", "canceled", "lost"))
        queued = counts.get("queued", 0) + counts.get("uploading", 0)
        return f"queued {queued}  running {counts.get('running', 0)}  done {done}  failed {failed}"

    try:
        with Progress(TextColumn(f"Batch {batch_id}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("", total=total, counts=summary({"queued": total}))
            while True:
                # Counts only (one small query), however large the batch; the rows once at the end.
                view = call(c.get, f"/v1/batches/{batch_id}")
                finished = sum(n for st, n in view["counts"].items() if st in TERMINAL)
                bar.update(task, completed=finished, counts=summary(view["counts"]))
                if view["finished"] and view["total"] >= total:
                    return batch_executions(c, batch_id)
                time.sleep(0.5)
    except KeyboardInterrupt:
        if sys.stdin.isatty():
            choice = typer.prompt("\nCancel the batch's unfinished executions (c) or detach and leave them running (d)?",
                                  default="c")
        else:
            choice = "c"
        if choice.lower().startswith("d"):
            err.print(f"Detached. Follow it with `rgrid status --batch {batch_id}`.")
            raise typer.Exit(0)
        n = cancel_unfinished(c, batch_id)
        err.print(f"Canceled {n} unfinished execution(s) of batch {batch_id}.")
        raise typer.Exit(EXIT_CANCELED)


# ---------------------------------------------------------------- other commands


@app.command()
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
    ex = call(client().get, f"/v1/executions/{execution_id}")
    if as_json:
        out.print_json(json.dumps(ex))
        return
    table = Table(show_header=False, box=None)
    for key in ("id", "status", "exit_code", "reason", "worker_id", "attempt", "runtime", "batch_id", "created_at",
                "queued_at", "started_at", "finished_at"):
        if ex.get(key) is not None:
            table.add_row(key, str(ex[key]))
    table.add_row("command", shlex.join([ex["script"], *ex["args"]]))
    if ex["env_keys"]:
        table.add_row("env", ", ".join(ex["env_keys"]) + " (values hidden)")
    for a in ex.get("attempts", []):
        table.add_row(f"attempt {a['attempt']}", f"on {a['worker_id']}: {a['outcome'] or 'running'}"
                      + (f" ({a['reason']})" if a.get("reason") else ""))
    out.print(table)


def batch_status(batch_id: str, as_json: bool):
    c = client()
    view = call(c.get, f"/v1/batches/{batch_id}")  # counts over the whole batch, however large
    rows = batch_executions(c, batch_id)
    if len(rows) < view["total"]:
        err.print(f"[yellow]rgrid:[/yellow] listing {len(rows)} of the batch's {view['total']} executions; "
                  "the counts cover all of them.", highlight=False)
    counts = ordered_counts(view["counts"])
    if as_json:
        out.print_json(json.dumps({"batch": batch_id, "counts": counts, "total": view["total"],
                                   "executions": [{**ex, "input": batch_input(ex)} for ex in rows]}))
        return
    out.print(f"Batch {batch_id}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
              + f" ({view['total']} execution{'s' if view['total'] != 1 else ''})", highlight=False)
    table = Table("id", "input", "status", "worker", "exit")
    for ex in rows:
        table.add_row(ex["id"], batch_input(ex), ex["status"], ex["worker_id"] or "",
                      "" if ex["exit_code"] is None else str(ex["exit_code"]))
    out.print(table)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json"),
    status_filter: Optional[str] = typer.Option(None, "--status"),
    batch: Optional[str] = typer.Option(None, "--batch", metavar="BATCH_ID", help="Only this batch's executions."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, max=BATCH_MAX,
                                        help=f"At most this many (default 20; with --batch {BATCH_MAX})."),
):
    """List your recent executions."""
    if limit is None:
        limit = BATCH_MAX if batch else 20
    rows = call(client().get, "/v1/executions", status=status_filter, batch=batch, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "status", "exit", "worker", "script", "created")
    for ex in rows:
        table.add_row(ex["id"], ex["status"], "" if ex["exit_code"] is None else str(ex["exit_code"]),
                      ex["worker_id"] or "", ex["script"], str(ex["created_at"]))
    out.print(table)


@app.command()
def logs(execution_id: str, follow_: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until it ends.")):
    """Print an execution's stdout and stderr (raw bytes, as the script wrote them)."""
    c = client()
    if follow_:
        follow(c, execution_id)
        return
    after = 0
    while True:
        page = call(c.get, f"/v1/executions/{execution_id}/logs", after=after)
        for chunk in page["chunks"]:
            stream = sys.stdout if chunk["stream"] == "stdout" else sys.stderr
            stream.buffer.write(base64.b64decode(chunk["data_b64"]))
            stream.flush()
        if not page["chunks"] or page["next_after"] == after:
            break
        after = page["next_after"]


@app.command("download")
def download_(execution_id: str, output_dir: Optional[Path] = typer.Option(None, "--output-dir")):
    """Download an execution's output files."""
    c = client()
    failures: list = []
    n = fetch_outputs(c, execution_id, output_dir or Path("rgrid-outputs") / execution_id, quiet=False,
                      failures=failures)
    if n == 0:
        err.print(f"{execution_id} has no output files.")
    if failures:
        fail(f"{len(failures)} of {n} output file(s) could not be downloaded safely.")


@app.command()
def cancel(execution_id: str):
    """Cancel a queued or running execution."""
    ex = call(client().post, f"/v1/executions/{execution_id}/cancel")
    out.print(f"{execution_id}: {ex['status']}", highlight=False)


@local_app.command("up")
def local_up(workers: int = typer.Option(2, "--workers", "-w", min=1, max=16, help="Worker nodes (2 slots each).")):
    """Start the local grid (API, orchestrator, SQLite, SeaweedFS S3, Ray head and workers)."""
    grid = _local_grid()
    home = rgrid_home()
    if grid.is_running(home):
        err.print("The local grid is already running; `rgrid local status` shows it.")
        return
    with err.status("Starting the local grid…") as status:
        try:
            grid.up(home, workers=workers, on_step=lambda s: status.update(f"Starting local grid: {s}…"))
        except Exception as e:  # noqa: BLE001
            fail(f"Could not start the local grid: {e} Logs are in {home / 'local' / 'logs'}.")
    local_status()


@local_app.command("status")
def local_status():
    """Show the local grid's components and addresses."""
    grid = _local_grid()
    state = grid.load_state(rgrid_home())
    if not state:
        err.print("No local grid is running. Start one with `rgrid local up`.")
        raise typer.Exit(1)
    table = Table("component", "pid", "state")
    for name, ok in state.components().items():
        table.add_row(name, str(state.pids[name]), "[green]running[/green]" if ok else "[red]stopped[/red]")
    out.print(table)
    out.print(f"API        {state.api_url}  (docs: {state.api_url}/docs)", highlight=False)
    out.print(f"Ray        {state.ray_address}  dashboard {state.dashboard_url}", highlight=False)
    out.print(f"S3         http://{state.s3_endpoint}", highlight=False)
    out.print(f"Database   {state.database_url}", highlight=False)
    out.print(f"Logs       {Path(state.home) / 'local' / 'logs'}", highlight=False)


@local_app.command("down")
def local_down():
    """Stop every process of the local grid (data and results are kept)."""
    grid = _local_grid()
    with err.status("Stopping the local grid…"):
        stopped = grid.down(rgrid_home())
    err.print("Local grid stopped." if stopped else "No local grid was running.")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()

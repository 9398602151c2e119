"""`rgrid`: run a script on the grid as you would run it locally."""
from __future__ import annotations

import base64
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from .client import ApiError, Client
from .config import Endpoint, remote_endpoint, rgrid_home
from .names import dedupe, input_name_problem
from .runtimes import DEFAULT_RUNTIME, SUPPORTED_RUNTIMES
from .transfer import LocalInput, TransferError, download, prepare, safe_target, upload

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
local_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage the local grid on this machine.")
app.add_typer(local_app, name="local")
err = Console(stderr=True)
out = Console()

TERMINAL = {"succeeded", "failed", "timed_out", "canceled", "lost"}
EXIT_TIMED_OUT, EXIT_CANCELED = 124, 130


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
           timeout: Optional[int], batch_id: Optional[str] = None, quiet: bool = False) -> dict:
    """Upload every input, then queue the execution. Nothing is queued if any upload fails."""
    script_name, rewritten, inputs = collect_inputs(script, args)
    with tempfile.TemporaryDirectory(prefix="rgrid-") as tmp:
        try:
            prepared = [prepare(name, src, Path(tmp)) for name, src in inputs]
        except TransferError as e:
            fail(str(e))
        created = call(c.post, "/v1/executions", json=dict(
            script=script_name, args=rewritten, env=env, runtime=runtime, timeout_seconds=timeout,
            inputs=[p.spec() for p in prepared], batch_id=batch_id,
        ))
        urls = {u["name"]: u["url"] for u in created["uploads"]}
        total = sum(p.size for p in prepared)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True, disable=quiet or total < 1024 * 1024) as bar:
            task = bar.add_task(f"Uploading {len(prepared)} file(s)", total=total)
            for item in prepared:
                try:
                    upload(urls[item.name], item, progress=lambda n: bar.advance(task, n))
                except (TransferError, Exception) as e:  # noqa: BLE001
                    call(c.post, f"/v1/executions/{created['id']}/cancel")
                    fail(f"Upload of {item.source} failed ({e}). Nothing was queued; try again.")
    return call(c.post, f"/v1/executions/{created['id']}/submit")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "allow_interspersed_args": False})
def run(
    script: str = typer.Argument(..., help="The Python script to run."),
    args: Optional[list[str]] = typer.Argument(None, help="Arguments for the script; existing files are uploaded."),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the script's environment (repeatable)."),
    runtime: str = typer.Option(DEFAULT_RUNTIME, "--runtime", help=f"One of: {', '.join(SUPPORTED_RUNTIMES)}."),
    timeout: Optional[int] = typer.Option(None, "--timeout", help="Wall-clock limit in seconds."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the execution id and return at once."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Where outputs go (default ./rgrid-outputs/<id>)."),
    no_download: bool = typer.Option(False, "--no-download", help="Leave outputs in the grid (rgrid download ID)."),
):
    """Run SCRIPT with ARGS on the grid; rgrid's own options go before SCRIPT."""
    if runtime not in SUPPORTED_RUNTIMES:
        fail(f"Unknown runtime {runtime!r}. Valid runtimes: {', '.join(SUPPORTED_RUNTIMES)}.")
    env_vars = parse_env(env)
    c = client(start_local=True)
    ex = submit(c, script, list(args or []), env_vars, runtime, timeout)
    if detach:
        out.print(ex["id"], highlight=False)
        return
    err.print(f"[dim]Execution {ex['id']} queued.[/dim]", highlight=False)
    final = follow(c, ex["id"], interactive_interrupt=True)
    if not no_download and final["status"] in ("succeeded", "failed", "timed_out"):
        fetch_outputs(c, final["id"], output_dir or Path("rgrid-outputs") / final["id"], quiet=False)
    raise typer.Exit(exit_code_for(final))


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


def fetch_outputs(c: Client, execution_id: str, target: Path, quiet: bool) -> int:
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
                err.print(f"[yellow]rgrid:[/yellow] {e}", highlight=False)
    if not quiet:
        err.print(f"[dim]{len(outputs)} output file(s) in {target}/[/dim]", highlight=False)
    return len(outputs)


# ---------------------------------------------------------------- other commands


@app.command()
def status(execution_id: str, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Show one execution: status, worker, attempts, times."""
    ex = call(client().get, f"/v1/executions/{execution_id}")
    if as_json:
        out.print_json(json.dumps(ex))
        return
    table = Table(show_header=False, box=None)
    for key in ("id", "status", "exit_code", "reason", "worker_id", "attempt", "runtime", "created_at",
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


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json"),
    status_filter: Optional[str] = typer.Option(None, "--status"),
    batch: Optional[str] = typer.Option(None, "--batch"),
    limit: int = typer.Option(20, "--limit"),
):
    """List your recent executions."""
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
    n = fetch_outputs(c, execution_id, output_dir or Path("rgrid-outputs") / execution_id, quiet=False)
    if n == 0:
        err.print(f"{execution_id} has no output files.")


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

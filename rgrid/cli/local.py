"""`rgrid local up|status|down`, and the one way the CLI starts or stops the local grid.

The CLI never imports the service: it reads the grid's state file (`rgrid_core.localstate`) and
starts or stops the grid by running `python -m rgrid_service.localgrid up|down --home H …`, whose
stderr carries `step: <text>` progress lines, `note: <sentence>` lines said once the grid runs,
and, on failure, a last line `error: <sentence>`.
"""
from __future__ import annotations

import importlib.util
import queue
import subprocess
import sys
import tempfile
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rgrid_core import localstate
from rgrid_core.localstate import GridState

from ..config import rgrid_home
from .output import err, fail, local_time, out, say

local_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage the local grid on this machine.")

SERVICE_MISSING = ("The local grid needs the service components. Install them with `pip install 'rgrid[service]'`, "
                   "or point RGRID_API_URL at a control plane.")
EXIT_GRACE = 0.5  # seconds to read the starter's last lines once it has exited


class Fleet(str, Enum):
    process = "process"
    pulumi = "pulumi"


def grid_command(action: str, home: Path, *extra: str) -> list[str]:
    if importlib.util.find_spec("rgrid_service") is None:
        fail(SERVICE_MISSING)
    return [sys.executable, "-m", "rgrid_service.localgrid", action, "--home", str(home), *extra]


def logs_dir(home: Path) -> Path:
    return home / "local" / "logs"


def sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def start(home: Path, workers: Optional[int], fleet: Optional[str] = None, max_workers: Optional[int] = None,
          title: str = "Starting the local grid…") -> GridState:
    """Start the local grid and return its state; fails with the starter's own sentence."""
    extra = ["--workers", str(workers)] if workers is not None else []
    if fleet:
        extra += ["--fleet", fleet]
    if max_workers:
        extra += ["--max-workers", str(max_workers)]
    cmd = grid_command("up", home, *extra)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # a thread: the grid's processes may hold the pipe long after the starter exits
        for raw in proc.stderr:
            lines.put(raw.decode(errors="replace").rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    error, last, notes = None, None, []
    try:
        with err.status(title) as spinner:
            exited_at = None
            while True:
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    if exited_at is None and proc.poll() is not None:
                        exited_at = time.monotonic()
                    if exited_at is not None and time.monotonic() - exited_at > EXIT_GRACE:
                        break
                    continue
                if line is None:
                    break
                if line.startswith("step: "):
                    spinner.update(f"Starting the local grid: {line[6:]}…")
                elif line.startswith("error: "):
                    error = line[7:]
                elif line.startswith("note: "):
                    notes.append(line[6:])
                elif line.strip():
                    last = line
            code = proc.wait()
    except KeyboardInterrupt:
        fail("Interrupted while the local grid was starting; `rgrid local down` stops what did start.", 130)
    if code != 0:
        why = sentence(error or last or f"its starter exited with code {code}")
        if not why.startswith("Could not start"):
            why = f"Could not start the local grid: {why}"
        fail(why if "Logs are in" in why else f"{why} Logs are in {logs_dir(home)}.")
    state = localstate.is_running(home)
    if state is None:
        fail(f"The local grid's starter finished, but the grid is not running. Logs are in {logs_dir(home)}.")
    for note in notes:
        say(note)
    return state


def stop(home: Path) -> None:
    """Stop the local grid, showing what the stopper prints."""
    cmd = grid_command("down", home)
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: nothing can hold it open
        with err.status("Stopping the local grid…"):
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT).returncode
        output.seek(0)
        shown = [line.rstrip() for line in output.read().decode(errors="replace").splitlines() if line.strip()]
    error = None
    for line in shown:
        if line.startswith("error: "):
            error = line[7:]
        else:
            say(line[6:] if line.startswith("step: ") else line)
    if code != 0:
        why = error or f"its stopper exited with code {code}"
        fail(f"Could not stop the local grid: {sentence(why)} Logs are in {logs_dir(home)}.")


@local_app.command("up")
def local_up(
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=0, max=16,
        help="Worker nodes, 2 slots each (default 2; with --fleet pulumi the fewest kept, default 0)."),
    fleet: Optional[Fleet] = typer.Option(None, "--fleet", help="How workers are provided (default: process)."),
    max_workers: Optional[int] = typer.Option(None, "--max-workers", min=1,
                                              help="The most workers the fleet may grow to."),
):
    """Start the local grid (API, orchestrator, SQLite, SeaweedFS S3, Ray head and workers)."""
    home = rgrid_home()
    if localstate.is_running(home):
        say("The local grid is already running; `rgrid local status` shows it.")
        return
    start(home, workers, fleet.value if fleet else None, max_workers)
    local_status()


@local_app.command("status")
def local_status():
    """Show the local grid's components and addresses."""
    from rich.table import Table

    state = localstate.load_state(rgrid_home())
    if not state:
        say("No local grid is running. Start one with `rgrid local up`.")
        raise typer.Exit(1)
    table = Table("component", "pid", "state")
    for name, ok in state.components().items():
        table.add_row(name, str(state.pids[name]), "[green]running[/green]" if ok else "[red]stopped[/red]")
    out.print(table)
    out.print(f"API        {state.api_url}  (docs: {state.api_url}/docs)", highlight=False)
    dashboard = state.dashboard_url or "off (RGRID_RAY_DASHBOARD=1 at `rgrid local up` starts it)"
    out.print(f"Ray        {state.ray_address}  dashboard {dashboard}", highlight=False)
    out.print(f"S3         http://{state.s3_endpoint}", highlight=False)
    out.print(f"Database   {state.database_url}", highlight=False)
    out.print(f"Fleet      {state.fleet}" + (f"  cloud API {state.cloud_url}" if state.cloud_url else ""),
              highlight=False)
    docker = (f"engine {state.docker_host}  runtime images {state.image_registry}" if state.docker_host
              else "none started: workers run python:3.11 in bubblewrap, unless RGRID_DOCKER_HOST named an engine")
    out.print(f"Docker     {docker}", highlight=False)
    out.print(f"Metrics    {state.api_url}/metrics (operator key)  orchestrator "
              f"{state.orchestrator_metrics_url or 'not served'}", highlight=False)
    out.print(f"Logs       {logs_dir(Path(state.home))}", highlight=False)
    if localstate.is_running(Path(state.home)) is None:
        say("The local grid is not running (a component stopped). `rgrid local down`, then `rgrid local up`.")
        raise typer.Exit(1)
    show_workers(state)


def show_workers(state: GridState) -> None:
    """The grid's workers as its API sees them (they are not components: the fleet replaces them)."""
    from rich.markup import escape
    from rich.table import Table

    from ..client import ApiError, Client

    try:
        cluster = Client(state.api_url, state.api_key, timeout=5, retry_seconds=0).get("/v1/cluster")
    except ApiError as e:
        say(f"Workers: the API did not answer ({e})")
        return
    table = Table("worker", "state", "slots", "running", "last heartbeat")
    for w in cluster["workers"]:
        table.add_row(w["id"], w["state"], str(w["slots"]), str(len(w.get("running") or [])),
                      local_time(w.get("last_heartbeat_at"), 0))
    out.print(table)
    events = cluster.get("fleet_events") or []
    if events:
        out.print("Fleet (latest first):", highlight=False)
        for e in events[:5]:
            mark = "" if e["ok"] else "[red]error[/red] "
            out.print(f"  {local_time(e['at'], 0)}  {mark}{escape(e['message'])}", highlight=False)


@local_app.command("down")
def local_down():
    """Stop every process of the local grid (data and results are kept)."""
    stop(rgrid_home())

"""`rgrid runtimes`: the runtimes `--runtime` takes, what each holds, its image's size and whether
every active worker has it (the grid's answer); with no grid running, the catalogue this rgrid was
built with."""
from __future__ import annotations

import json

import typer

from rgrid_core import localstate
from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME

from ..config import remote_endpoint, rgrid_home
from . import connect
from .output import out, say


def catalogue_only() -> dict:
    """What this rgrid knows without a grid: no sizes, no workers."""
    return {"runtimes": [
        {"name": r.name, "contents": r.contents, "default": r.name == DEFAULT_RUNTIME, "runs_in": r.runs_in,
         "debian_suite": r.suite, "packages": list(r.packages), "image_tag": r.tag, "size_bytes": None,
         "workers_ready": None, "workers_active": None, "workers_missing": []} for r in CATALOGUE.values()]}


def on_workers(row: dict) -> str:
    if row["workers_active"] is None:
        return "-"
    if not row["workers_active"]:
        return "no active workers"
    said = f"{row['workers_ready']}/{row['workers_active']}"
    if row["workers_missing"]:
        shown = ", ".join(row["workers_missing"][:3]) + (" …" if len(row["workers_missing"]) > 3 else "")
        said += f" (not on {shown})"
    return "every worker" if row["workers_ready"] == row["workers_active"] else said


def size(row: dict) -> str:
    return "-" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:,.0f} MB"


def runtimes(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """The runtimes a script can run in (pick one with `rgrid run --runtime NAME`): what each holds,
    its image's size and whether every active worker has it."""
    grid = remote_endpoint() is not None or localstate.is_running(rgrid_home()) is not None
    view = connect.call(connect.client().get, "/v1/runtimes") if grid else catalogue_only()
    if as_json:
        out.print_json(json.dumps(view))
        return
    from rich.table import Table

    table = Table("runtime", "contents", "size", "on workers", "runs in", box=None, pad_edge=False, highlight=False)
    for row in view["runtimes"]:
        table.add_row(row["name"] + (" (default)" if row["default"] else ""), row["contents"], size(row),
                      on_workers(row), row["runs_in"])
    out.print(table)
    if not grid:
        say("No grid is running: sizes and which workers hold each image show once one is (`rgrid local up`).")

"""`rgrid runtimes`: the runtimes `--runtime` takes, from the catalogue this rgrid was built with."""
from __future__ import annotations

import json

import typer

from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME

from .output import out


def where(runtime) -> str:
    if runtime.sandbox:
        return "container; bubblewrap on a worker without Docker"
    return "container (a worker with Docker)"


def runtimes(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """The runtimes a script can run in (pick one with `rgrid run --runtime NAME`): what each holds and where it runs."""
    rows = [{"name": r.name, "contents": r.contents, "default": r.name == DEFAULT_RUNTIME, "runs_in": where(r),
             "debian_suite": r.suite, "packages": list(r.packages), "image_tag": r.tag} for r in CATALOGUE.values()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("runtime", "contents", "runs in", box=None, pad_edge=False, highlight=False)
    for row in rows:
        table.add_row(row["name"] + (" (default)" if row["default"] else ""), row["contents"], row["runs_in"])
    out.print(table)

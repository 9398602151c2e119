"""`rgrid`: run a script on the grid as you would run it locally."""
from __future__ import annotations

import typer

from . import fleet, inspect, local, run, runtimes, workers

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"rgrid {version('rgrid')}")
        raise typer.Exit(0)


@app.callback()
def main(_version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                       help="Print rgrid's version and exit.")):
    pass


app.command(help=run.RUN_HELP, context_settings={
    "allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False,
})(run.run)
app.command()(inspect.status)
app.command("list")(inspect.list_)
app.command()(inspect.logs)
app.command()(inspect.download)
app.command()(inspect.cancel)
app.command()(runtimes.runtimes)
app.add_typer(local.local_app, name="local")
app.add_typer(workers.workers_app, name="workers")
app.add_typer(fleet.fleet_app, name="fleet")

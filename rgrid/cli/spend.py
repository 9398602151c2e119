"""The fleet's spend per clock hour (`GET /v1/fleet/costs`, operator): paid server hours, what runs
paid of them, and the idle rest. A section of `rgrid fleet history`."""
from __future__ import annotations

from .connect import call
from .fleetview import euros
from .output import local_time, out, say


def fetch_spend(client, hours: int) -> dict:
    return call(client.get, "/v1/fleet/costs", hours=hours)


def show_spend(view: dict) -> None:
    from rich.table import Column, Table

    if not view["spend_eur"]:
        say(f"No spend in the last {len(view['hours'])} hour(s): no priced worker had a paid hour begin in them "
            "(local workers cost nothing).")
        return
    table = Table(Column("hour", no_wrap=True), "workers", "spend", "runs", "idle", box=None, pad_edge=False,
                  title="Spend per hour: paid server hours that began in it, what runs paid, the idle rest",
                  title_justify="left")
    for h in view["hours"]:
        if h["spend_eur"] or h["runs_eur"]:
            table.add_row(local_time(h["hour"], 0), str(h["workers"]), euros(h["spend_eur"]), euros(h["runs_eur"]),
                          euros(h["idle_eur"]))
    table.add_row("total", "", euros(view["spend_eur"]), euros(view["runs_eur"]), euros(view["idle_eur"]))
    out.print(table)

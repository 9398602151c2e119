"""`rgrid workers` (the fleet's workers) and `rgrid workers retire ID`: operator commands."""
from __future__ import annotations

import json

import typer

from . import connect
from .connect import call
from .fleetview import short_node, span
from .output import out, parse_time, say

workers_app = typer.Typer(add_completion=False, invoke_without_command=True,
                          help="The grid's workers (needs an operator API key; the local grid's key is one).")


@workers_app.callback()
def workers(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List the workers: state, server type, location, slots used of total, age, time left in the
    paid hour, last heartbeat and Ray node."""
    if ctx.invoked_subcommand is not None:
        return
    view = call(connect.client().get, "/v1/workers")
    if as_json:
        out.print_json(json.dumps(view))
        return
    if not view["workers"]:
        say("No workers. The fleet adds them when runs are queued; `rgrid fleet preview` shows what it would do.")
        return
    from rich.table import Column, Table

    now = parse_time(view["now"])
    table = Table(Column("worker", no_wrap=True), "state", "type", "location", "slots", "age", "paid hour left",
                  "last heartbeat", Column("Ray node", no_wrap=True, min_width=12), box=None, pad_edge=False)
    for w in view["workers"]:
        beat = w.get("last_heartbeat_at")
        table.add_row(w["id"], w["state"],
                      w.get("server_type") or "", w.get("location") or "", f"{w['slots_used']}/{w['slots']}",
                      span(w["age_seconds"]), span(w.get("paid_hour_left_seconds")),
                      f"{span((now - parse_time(beat)).total_seconds())} ago" if beat else "never",
                      short_node(w.get("ray_node_id")))
    out.print(table)
    by_hand = [w["id"] for w in view["workers"] if w.get("retire_requested_at") and w["state"] == "draining"]
    if by_hand:
        say(f"Retired by hand: {', '.join(by_hand)} (each goes once idle).")


@workers_app.command("retire")
def retire(worker_id: str = typer.Argument(..., metavar="ID", help="A worker id (w-…), as `rgrid workers` lists it.")):
    """Retire a worker by hand: it takes no new runs and, once idle, the next fleet update deletes its server (`rgrid fleet history` shows it with trigger `manual`)."""  # noqa: E501 - one line, as the help shows it
    done = call(connect.client().post, f"/v1/workers/{worker_id}/retire")
    say(done["message"])

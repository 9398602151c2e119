"""`rgrid fleet preview` and `rgrid fleet history`: the fleet's changes before and after (operator).

`history` is built from sections: each fetches its part from the API and shows it; `--json`
prints {section key: what it fetched}. The updates come first, then the spend per hour (`spend.py`);
another part is one more `Section` appended to HISTORY_SECTIONS.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

from . import connect
from .connect import call
from .fleetview import MARKS, diff_line, euros, span
from .output import err, local_time, note, out, say, warn
from .spend import fetch_spend, show_spend

fleet_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The fleet's changes, before and after (needs an operator API key; the local grid's key "
                             "is one).")

# An engine preview runs the Pulumi program: give it time on a busy machine.
PREVIEW_TIMEOUT = 180.0


def _client(timeout: float | None = None):
    c = connect.client()
    http = getattr(c, "http", None)
    if timeout and http is not None:
        import httpx

        http.timeout = httpx.Timeout(timeout)
    return c


# ---------------------------------------------------------------- preview


@fleet_app.command("preview")
def preview(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """What the fleet would do now, changing nothing: the policies' plan with its reasons, the engine's diff per server, and the change in € per hour and per month."""  # noqa: E501
    with err.status("Previewing the fleet (the engine runs the worker_pool program)…"):
        view = call(_client(PREVIEW_TIMEOUT).get, "/v1/fleet/preview")
    if as_json:
        out.print_json(json.dumps(view))
        return
    show_preview(view)


def show_preview(view: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(f"Fleet preview ({view['provider']}) at {local_time(view['at'], 0)}: {view['queued']} queued; "
              f"servers now: {', '.join(view['existing']) or 'none'}.", highlight=False)
    if view["actions"]:
        out.print("The orchestrator would:", highlight=False)
        for a in view["actions"]:
            who = ", ".join(a["workers"] or view["new_workers"])
            out.print(f"  {a['kind']:<12} {who:<10} {escape(a['reason'])}", highlight=False)
    else:
        out.print("The orchestrator would change nothing: the policies are content with the workers there are.",
                  highlight=False)
    if view["servers"]:
        table = Table("", "worker", "change", "type", "€ per hour", "€ per month", box=None, pad_edge=False,
                      title="The engine's diff of the worker_pool stack", title_justify="left")
        for s in view["servers"]:
            table.add_row(MARKS[s["change"]], s["worker_id"], s["change"], s["server_type"] or "",
                          euros(s["hourly_eur"]), euros(s["monthly_eur"], 2))
        out.print(table)
    else:
        out.print("The engine's diff of the worker_pool stack: no change.", highlight=False)
    cost = view["cost"]
    dated = f" (prices of {', '.join(cost['prices_as_of'])})" if cost["prices_as_of"] else ""
    out.print(f"Cost: {euros(cost['now_hourly_eur'])}/h now; change {euros(cost['hourly_eur'], signed=True)}/h, "
              f"{euros(cost['monthly_eur'], 2, signed=True)}/month{dated}.", highlight=False)
    for sentence in cost["missing"]:
        warn(sentence)


# ---------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryOptions:
    limit: int
    before: Optional[int]
    hours: int = 24  # of spend per hour


@dataclass(frozen=True)
class Section:
    """One part of `rgrid fleet history`: `fetch` asks the API, `show` prints it for people."""

    key: str
    fetch: Callable[[Any, HistoryOptions], Any]
    show: Callable[[Any, HistoryOptions], None]


def fetch_updates(client, opts: HistoryOptions) -> dict:
    return call(client.get, "/v1/fleet/history", limit=opts.limit, before=opts.before)


def show_updates(page: dict, opts: HistoryOptions) -> None:
    from rich.table import Column, Table
    from rich.text import Text

    if not page["updates"]:
        say("No fleet updates yet." if opts.before is None else "No older fleet updates.")
        return
    table = Table(Column("time", no_wrap=True), "trigger", "changes", "engine", "result", box=None, pad_edge=False,
                  title="Fleet updates (newest first)", title_justify="left")
    for u in page["updates"]:
        table.add_row(local_time(u["at"], 0), u["trigger"] or "", diff_line(u["diff"]) or (u["summary"] if u["ok"] else ""),
                      span(u["duration_seconds"]),
                      Text("ok") if u["ok"] else Text(u["summary"], style="red"))
    out.print(table)
    if page.get("next_before"):
        note(f"Older updates: rgrid fleet history --before {page['next_before']}")


HISTORY_SECTIONS: list[Section] = [
    Section("updates", fetch_updates, show_updates),
    Section("spend", lambda client, opts: fetch_spend(client, opts.hours), lambda view, opts: show_spend(view)),
]


@fleet_app.command("history")
def history(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="At most this many updates, the newest."),
    before: Optional[int] = typer.Option(None, "--before", min=1, metavar="ID",
                                         help="Only updates older than this one (the next page)."),
    hours: int = typer.Option(24, "--hours", min=1, max=744, help="Spend per hour over this many clock hours."),
):
    """Every fleet update: time, trigger (provisioning, replacement, retirement, manual), what it created, deleted or replaced, how long the engine took, and its result or error; then the spend per hour: paid server hours, what runs paid of them, and the idle rest."""  # noqa: E501
    c = _client()
    opts = HistoryOptions(limit, before, hours)
    parts = {s.key: s.fetch(c, opts) for s in HISTORY_SECTIONS}
    if as_json:
        out.print_json(json.dumps(parts))
        return
    for s in HISTORY_SECTIONS:
        s.show(parts[s.key], opts)

"""`python -m rgrid_service.localgrid up|down|status --home H`: the one entry point through which
the client starts, stops and inspects a local grid (the client never imports the service).

`up` prints `step: …` lines on stderr while it starts things, `note: <sentence>` for what a person
should know about the grid that started (its workers have no Docker, and why), and exits 0 once the
grid runs; on failure its last stderr line is `error: <sentence>` and it exits 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rgrid_service.localgrid")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--home", required=True, type=Path)
    up.add_argument("--workers", type=int, default=None, help="process fleet: how many (2); pulumi: the least (0)")
    up.add_argument("--fleet", choices=("process", "pulumi"), default="process")
    up.add_argument("--max-workers", type=int, default=None)
    for name in ("down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--home", required=True, type=Path)
        p.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)
    if opts.command == "up":
        return _up(opts)
    if opts.command == "down":
        from .grid import down

        said = down(opts.home)
        print("\n".join(said) if said else "No local grid was running.")
        return 0
    from .status import grid_status

    report = grid_status(opts.home)
    print(json.dumps(report, indent=2, default=str) if opts.json else report_text(report))
    return 0 if report.get("running") else 1


def _up(opts) -> int:
    from .grid import up

    def step(text: str) -> None:
        print(f"step: {text}", file=sys.stderr, flush=True)

    try:
        state = up(opts.home, workers=opts.workers, on_step=step, fleet=opts.fleet, max_workers=opts.max_workers,
                   on_note=lambda text: print(f"note: {text}", file=sys.stderr, flush=True))
    except Exception as e:  # noqa: BLE001 - one sentence for the person, the details are in the logs
        sentence = first_line(e)
        print(f"error: Could not start the local grid: {sentence} Logs are in {opts.home / 'local' / 'logs'}.",
              file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"api_url": state.api_url, "fleet": state.fleet}))
    return 0


def first_line(error: BaseException) -> str:
    """The sentence of an error: its first line (a database error's own text, not SQLAlchemy's
    trailer pointing at its docs)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def report_text(report: dict) -> str:
    """The report for a person: what runs, the workers, the fleet's latest events."""
    if not report.get("running") and "components" not in report:
        return "No local grid is running."
    lines = [f"{name:<13} pid {c['pid']:<8} {'running' if c['alive'] else 'stopped'}"
             for name, c in report["components"].items()]
    lines.append(f"API {report['api_url']}   fleet {report['fleet']}   logs {report['logs']}")
    metrics = report.get("metrics") or {}
    lines.append(f"metrics: API {metrics.get('api')} (operator key)   orchestrator {metrics.get('orchestrator')}")
    lines += [f"worker {w['id']:<6} {w['state']:<9} {w.get('server_type') or ''}" for w in report["workers"]]
    lines += [f"{e['at']}  {e['kind']}: {e['message']}" for e in report["fleet_events"]]
    if report.get("fleet_error"):
        lines.append(report["fleet_error"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""The CLI's two consoles, its one way to fail, and how it shows a time."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

err = Console(stderr=True, soft_wrap=True)  # sentences stay on one line when piped
out = Console()


def error(message: str) -> None:
    """`rgrid: <message>` on stderr, in red; the message is plain text, never markup."""
    err.print(Text.assemble(("rgrid:", "red"), " ", message))


def fail(message: str, code: int = 1) -> NoReturn:
    error(message)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err.print(Text.assemble(("rgrid:", "yellow"), " ", message))


def note(message: str) -> None:
    """A dim line on stderr: what happened, what to do next."""
    err.print(Text(message, style="dim"))


def say(message: str) -> None:
    err.print(Text(message))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def parse_time(value: str) -> datetime:
    """An API timestamp (ISO 8601, `Z` or an offset; UTC when it names no zone) as an aware datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def local_time(value: str | None, digits: int = 3) -> str:
    """An API timestamp (ISO 8601; UTC when it names no zone) in this machine's time zone, with the
    zone and `digits` digits of the fraction: `2026-05-01 14:03:22.123 +02:00`."""
    if not value:
        return ""
    try:
        moment = parse_time(str(value))
    except ValueError:
        return str(value)
    moment = moment.astimezone()
    shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    if digits:
        shown += f".{moment.microsecond:06d}"[: digits + 1]
    offset = moment.strftime("%z")  # +0200
    return f"{shown} {offset[:3]}:{offset[3:]}"


def eur(amount: float | None) -> str:
    """An amount in euros as a person reads it: cents when it has any, else the first digits that
    say something (a short run on a 2-slot cx23 costs millionths of a euro)."""
    if amount is None:
        return ""
    if amount == 0:
        return "€0"
    if amount >= 0.01:
        return f"€{amount:.2f}"
    if amount < 0.0000001:
        return "less than €0.0000001"
    return "€" + f"{amount:.7f}".rstrip("0")

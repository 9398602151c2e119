"""How the fleet commands show numbers: durations, euros, Ray node ids, diffs."""
from __future__ import annotations


def span(seconds: float | None) -> str:
    """A duration as a person reads it: 42s, 5m07s, 2h03m."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def euros(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "no price"
    return f"{'+' if signed and value > 0 else ''}{'-' if value < 0 else ''}€{abs(value):.{digits}f}"


def short_node(node_id: str | None) -> str:
    """Ray node ids are 56 hex digits; the first 12 tell them apart (--json has them whole)."""
    return (node_id or "")[:12]


MARKS = {"create": "+", "delete": "-", "replace": "~", "update": "~"}


def diff_line(diff: dict | None) -> str:
    """{"create": [...], "delete": [...], "replace": [...]} as `+w-3 -w-1 ~w-2`."""
    if not diff:
        return ""
    return " ".join(f"{MARKS[kind]}{w}" for kind in ("create", "delete", "replace") for w in diff.get(kind) or [])

"""What a fleet change costs, from the price table: € per hour and per month, server by server.

A created server adds its type's price, a deleted one takes it away, a replaced one costs the same
after as before. A server type the table does not have is left out of the sums and named in a
sentence, never a crash.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import FleetDiff
from .prices import PriceTable

SIGN = {"create": 1, "delete": -1, "replace": 0, "update": 0}


@dataclass(frozen=True)
class ServerCost:
    worker_id: str
    change: str  # create | delete | replace | update
    server_type: str | None
    hourly_eur: float | None  # the type's price (None: not in the table)
    monthly_eur: float | None


@dataclass(frozen=True)
class PriceChange:
    servers: tuple[ServerCost, ...]
    now_hourly_eur: float  # the servers that exist now
    hourly_eur: float  # the change
    monthly_eur: float
    as_of: tuple[str, ...]  # the dates of the prices used
    missing: tuple[str, ...]  # a sentence per server type the table lacks


def price_change(diff: FleetDiff, existing: list[str], types: dict[str, str | None], table: PriceTable) -> PriceChange:
    """diff: the engine's diff; existing: the worker ids with a server now; types: worker id ->
    server type, for every worker named in either."""
    servers, dates, lacking = [], set(), {}

    def price(worker_id: str):
        kind = types.get(worker_id)
        found = table.get(kind) if kind else None
        if found is None:
            lacking.setdefault(kind or "unknown", []).append(worker_id)
        else:
            dates.add(found.as_of)
        return kind, found

    now = 0.0
    for worker_id in existing:
        _, found = price(worker_id)
        now += found.hourly_eur if found else 0.0
    hourly = monthly = 0.0
    for change in ("create", "delete", "replace", "update"):
        for worker_id in getattr(diff, change):
            kind, found = price(worker_id)
            servers.append(ServerCost(worker_id, change, kind, found and found.hourly_eur, found and found.monthly_eur))
            if found:
                hourly += SIGN[change] * found.hourly_eur
                monthly += SIGN[change] * found.monthly_eur
    missing = tuple(
        f"The price table has no price for server type {kind!r} ({', '.join(sorted(set(ids)))}), so it is left out "
        "of the figures; add it to the table RGRID_PRICE_TABLE names." for kind, ids in sorted(lacking.items()))
    return PriceChange(tuple(servers), round(now, 6), round(hourly, 6), round(monthly, 4), tuple(sorted(dates)),
                       missing)

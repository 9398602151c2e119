"""What Hetzner charges, as a dated table: fleet previews, run costs and the deploy guide read it.

Prices change (Hetzner adjusted its whole list on 2026-04-01), so every figure carries the date
it was read and where from, and an operator can replace the table (`RGRID_PRICE_TABLE`, a JSON
file of the same shape). Figures are net EUR (no VAT) for the German and Finnish locations.
Hetzner bills every started hour up to the monthly cap, which is `monthly`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Price:
    """One billable thing: a server type, a volume GB or a primary IPv4."""

    item: str
    hourly_eur: float
    monthly_eur: float
    as_of: str  # the date the figure was read (ISO)
    source: str


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]

    def get(self, item: str) -> Price | None:
        return self.prices.get(item)

    def hourly(self, item: str) -> float | None:
        price = self.prices.get(item)
        return None if price is None else price.hourly_eur

    def as_json(self) -> dict:
        return {name: p.__dict__ for name, p in sorted(self.prices.items())}


_APRIL_2026 = "Hetzner Cloud price list after the 2026-04-01 adjustment, as quoted on public pages read on 2026-11-30"
_BEFORE_2026 = "Hetzner Cloud price list before 2026-04-01, not re-read since; check hetzner.com/cloud"

# Hourly = monthly cap / Hetzner's hours per month at its own rounding (a cx23 at 3.99/month is 0.0064/h).
DEFAULT_PRICES = PriceTable({
    "cx23": Price("cx23", 0.0064, 3.99, "2026-04-15", _APRIL_2026),
    "cx33": Price("cx33", 0.0104, 6.49, "2026-04-15", _APRIL_2026),
    "volume-gb": Price("volume-gb", 0.0000705, 0.044, "2025-10-01", _BEFORE_2026),
    "primary-ipv4": Price("primary-ipv4", 0.0008, 0.50, "2025-10-01", _BEFORE_2026),
})


def load_price_table(path: str | None) -> PriceTable:
    """The operator's table (a JSON object of item → {hourly_eur, monthly_eur, as_of, source}),
    else the defaults. A broken file is an error with a sentence, never silently the defaults."""
    if not path:
        return DEFAULT_PRICES
    try:
        raw = json.loads(Path(path).read_text())
        return PriceTable({item: Price(item, float(v["hourly_eur"]), float(v["monthly_eur"]),
                                       str(v.get("as_of", "unknown")), str(v.get("source", path)))
                           for item, v in raw.items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"The price table {path} cannot be read ({exc}). Fix it or unset RGRID_PRICE_TABLE "
                         "to use the built-in prices.") from exc

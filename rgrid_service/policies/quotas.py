"""Per-tenant quotas: whether a create fits a tenant's limits, and if not, the sentence why.

A tenant's limits are the settings' defaults unless `tenant_quotas` says otherwise for it; a
limit of 0 (or None) means no limit. Queued runs count `uploading` and `queued` ones; stored
bytes count the tenant's kept inputs (blobs) and the outputs of its runs whose files have not
expired. Concurrent runs are not refused at create: placement keeps the extra ones waiting.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class Limits:
    queued_runs: int | None
    running_runs: int | None
    stored_bytes: int | None


@dataclass(frozen=True)
class Usage:
    queued_runs: int
    stored_bytes: int


def effective(default: int | None, override: int | None) -> int | None:
    """The override when set, else the default; 0 (or below) means unlimited (None)."""
    value = default if override is None else override
    return value if value and value > 0 else None


def size(n: int) -> str:
    """Bytes as a person reads them: `512 MiB`, `1.5 GiB`."""
    for unit, factor in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= factor:
            value = n / factor
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{n} byte{'s' if n != 1 else ''}"


def refusal(limits: Limits, usage: Usage, new_runs: int, new_bytes: int) -> str | None:
    """Why `new_runs` more runs storing `new_bytes` more bytes would go over the tenant's limits,
    as a sentence with what to do; None when they fit. Nothing is created when refused."""
    if limits.queued_runs is not None and usage.queued_runs + new_runs > limits.queued_runs:
        asked = f"these {new_runs} runs" if new_runs > 1 else "this run"
        return (f"Over your quota of {limits.queued_runs} queued runs: you have {usage.queued_runs} uploading or "
                f"queued, and {asked} would make {usage.queued_runs + new_runs}. Nothing was created; wait for some "
                "to finish (or cancel some) and try again, or ask the operator for a higher quota.")
    if limits.stored_bytes is not None and new_bytes and usage.stored_bytes + new_bytes > limits.stored_bytes:
        return (f"Over your storage quota of {size(limits.stored_bytes)}: your inputs and outputs take "
                f"{size(usage.stored_bytes)}, and this needs {size(new_bytes)} more. Nothing was created; files of "
                "ended runs are deleted after the retention time, or ask the operator for a higher quota.")
    return None


def concurrency_sentence(limit: int) -> str:
    """What a queued run held back by its tenant's concurrency limit waits for."""
    return f"Waiting: your limit of {limit} concurrent run{'s' if limit != 1 else ''} is reached"

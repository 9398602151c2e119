"""Which files retention deletes from the store (a pure rule; orchestrator/retention.py acts).

- An ended run's files (its outputs, and anything left under its staging key) go once it ended
  longer than the retention time ago.
- A kept input (a blob, shared by content among a tenant's runs) goes once no run has used it
  for the retention time (its last use, else its upload) and no run that has not ended needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class EndedRun:
    execution_id: str
    finished_at: datetime


@dataclass(frozen=True)
class KeptBlob:
    tenant_id: str
    sha256: str
    object_key: str
    last_used_at: datetime  # its last use by a run, else when it was uploaded
    needed: bool  # a run that has not ended names it


def expired_runs(now: datetime, retention: timedelta, runs: list[EndedRun]) -> list[str]:
    return [r.execution_id for r in runs if r.finished_at <= now - retention]


def expired_blobs(now: datetime, retention: timedelta, blobs: list[KeptBlob]) -> list[KeptBlob]:
    return [b for b in blobs if not b.needed and b.last_used_at <= now - retention]


def retention_words(retention: timedelta) -> str:
    """`7 days`, `1 day`, `90 s`: the retention time as the 410's sentence says it."""
    seconds = retention.total_seconds()
    if seconds >= 86400 and seconds % 3600 == 0:
        days = seconds / 86400
        return f"{days:g} day{'s' if days != 1 else ''}"
    if seconds >= 3600 and seconds % 60 == 0:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} s"

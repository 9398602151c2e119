"""API keys this API process verified lately, so that a client's repeated reads (a follower, a
script polling its run) do not look their key up in the database every time.

An entry lives `ttl_seconds` from the moment its database read began, however often it is used:
a key revoked (or given another scope) in the database is honoured by every process at most that
long after the change. Only keys found valid are kept, by their sha256 (no key itself is held), at
most `max_keys` of them, the oldest verified going first. Each API process has its own; it is
used from the event loop only, so it needs no lock. A TTL of 0 turns it off.
"""
from __future__ import annotations

import time
from typing import Callable

from ..auth import Caller


class VerifiedKeys:
    def __init__(self, ttl_seconds: float, max_keys: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl_seconds
        self.max_keys = max_keys
        self.clock = clock
        self._by_hash: dict[str, tuple[Caller, float]] = {}  # key hash -> (caller, expires at); oldest first

    def now(self) -> float:
        return self.clock()

    def get(self, key_hash: str) -> Caller | None:
        """The caller of a key verified less than the TTL ago; None otherwise (look it up)."""
        entry = self._by_hash.get(key_hash)
        if entry is None:
            return None
        caller, expires_at = entry
        if self.clock() >= expires_at:
            del self._by_hash[key_hash]
            return None
        return caller

    def remember(self, key_hash: str, caller: Caller, read_began_at: float) -> None:
        """Keep a key the database said was valid at a read that began at `read_began_at` (now()).
        Counting from the read's start, not its end, keeps the bound whatever the read took."""
        if self.ttl <= 0 or self.max_keys <= 0:
            return
        self._by_hash.pop(key_hash, None)  # re-inserted last: the order stays oldest verified first
        while len(self._by_hash) >= self.max_keys:
            del self._by_hash[next(iter(self._by_hash))]
        self._by_hash[key_hash] = (caller, read_began_at + self.ttl)

    def __len__(self) -> int:
        return len(self._by_hash)

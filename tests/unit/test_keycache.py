"""The API's verified-key cache (api/keycache.py): how long a verified key is trusted without a
lookup, on a clock the test moves (never the wall clock)."""
from __future__ import annotations

from rgrid_service.api.keycache import VerifiedKeys
from rgrid_service.auth import Caller

A = Caller("tenant-a", "tenant")
B = Caller("tenant-b", "operator")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_trusted_for_the_ttl_counted_from_the_start_of_its_read():
    clock = Clock()
    keys = VerifiedKeys(5.0, 100, clock)
    began = keys.now()
    clock.t += 2.0  # the lookup took 2 s
    keys.remember("h-a", A, began)
    assert keys.get("h-a") == A
    clock.t = began + 4.999
    assert keys.get("h-a") == A
    clock.t = began + 5.0  # five seconds after the database said yes: asked again
    assert keys.get("h-a") is None
    assert len(keys) == 0


def test_use_does_not_extend_an_entry():
    clock = Clock()
    keys = VerifiedKeys(5.0, 100, clock)
    keys.remember("h-a", A, keys.now())
    for _ in range(10):
        clock.t += 0.4
        assert keys.get("h-a") == A
    clock.t += 1.01  # 5 s after the read, however busy the key was
    assert keys.get("h-a") is None


def test_unknown_keys_are_not_answered():
    keys = VerifiedKeys(5.0, 100, Clock())
    keys.remember("h-a", A, keys.now())
    assert keys.get("h-b") is None


def test_a_ttl_of_zero_keeps_nothing():
    keys = VerifiedKeys(0.0, 100, Clock())
    keys.remember("h-a", A, keys.now())
    assert keys.get("h-a") is None and len(keys) == 0


def test_at_most_max_keys_the_oldest_verified_going_first():
    clock = Clock()
    keys = VerifiedKeys(60.0, 3, clock)
    for i in range(3):
        keys.remember(f"h-{i}", A, keys.now())
        clock.t += 1
    keys.remember("h-0", B, keys.now())  # verified again: now the newest
    keys.remember("h-3", A, keys.now())  # one too many: h-1, the oldest verified, goes
    assert len(keys) == 3
    assert keys.get("h-1") is None
    assert keys.get("h-0") == B and keys.get("h-2") == A and keys.get("h-3") == A

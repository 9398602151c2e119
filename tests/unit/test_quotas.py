"""Per-tenant quotas (policies.quotas), the limit of concurrent runs in placement, and the
waiting sentence of a run held back by it."""
from __future__ import annotations

from datetime import datetime

import pytest

from rgrid_service.policies.placement import Queued, WorkerLoad, place
from rgrid_service.policies.quotas import GIB, Limits, Usage, effective, refusal, size
from rgrid_service.policies.waiting import WaitSnapshot, waiting

NOW = datetime(2026, 11, 30, 12)


@pytest.mark.parametrize("default, override, expected", [
    (10, None, 10), (10, 3, 3), (10, 0, None), (0, None, None), (0, 5, 5), (None, None, None),
])
def test_effective_limit(default, override, expected):
    assert effective(default, override) == expected


@pytest.mark.parametrize("n, shown", [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1 KiB"),
                                      (1536 * 1024, "1.5 MiB"), (100 * GIB, "100 GiB")])
def test_size(n, shown):
    assert size(n) == shown


def test_refusal_names_the_limit_the_use_and_what_to_do():
    lim = Limits(queued_runs=10, running_runs=None, stored_bytes=GIB)
    assert refusal(lim, Usage(9, 0), 1, 0) is None
    assert refusal(lim, Usage(9, GIB - 1), 1, 1) is None
    one = refusal(lim, Usage(10, 0), 1, 0)
    assert one.startswith("Over your quota of 10 queued runs: you have 10 uploading or queued, and this run would "
                          "make 11. Nothing was created;") and "ask the operator for a higher quota" in one
    assert "these 5 runs would make 14" in refusal(lim, Usage(9, 0), 5, 0)
    stored = refusal(lim, Usage(0, GIB - 10), 1, 11)
    assert stored.startswith("Over your storage quota of 1 GiB: your inputs and outputs take 1024 MiB, and this "
                             "needs 11 bytes more. Nothing was created;")
    # Nothing new to store is never refused for storage, even over it (the run reuses what is held).
    assert refusal(lim, Usage(0, 2 * GIB), 1, 0) is None
    assert refusal(Limits(None, None, None), Usage(10 ** 9, 10 ** 15), 1000, 10 ** 12) is None


def W(wid, busy=0, slots=2):
    return WorkerLoad(wid, slots, busy, 0)


def test_placement_never_exceeds_a_tenants_limit_and_others_pass():
    queued = [Queued(f"a{i}", tenant_id="a") for i in range(5)] + [Queued("b0", tenant_id="b"), Queued("c0")]
    decisions = place(queued, [W("w-1"), W("w-2"), W("w-3")], {}, tenant_busy={"a": 1}, tenant_limit={"a": 3})
    assert [e for e, _ in decisions] == ["a0", "a1", "b0", "c0"]
    # At its limit already: none of a's, with any prefetch.
    decisions = place(queued, [W("w-1"), W("w-2")], {}, prefetch=4, tenant_busy={"a": 3}, tenant_limit={"a": 3})
    assert [e for e, _ in decisions] == ["b0", "c0"]
    # Without limits, as before.
    assert len(place(queued, [W("w-1", slots=10)], {})) == 7


def test_waiting_says_the_tenants_limit_is_reached():
    w = waiting(WaitSnapshot(NOW, 3, 9, tenant_limit=4, tenant_busy=4))
    assert (w.kind, w.sentence) == ("quota", "Waiting: your limit of 4 concurrent runs is reached")
    assert waiting(WaitSnapshot(NOW, 3, 9, tenant_limit=4, tenant_busy=3)).kind == "slot"
    # Already placed on a worker: it starts there.
    assert waiting(WaitSnapshot(NOW, 1, 9, dispatched_to="w-1", tenant_limit=1, tenant_busy=1)).kind == "dispatched"

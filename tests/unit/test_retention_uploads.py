"""The retention rule (policies.retention) and how an input is cut into multipart parts."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rgrid_service.api.uploads import S3_MIN_PART, part_sizes
from rgrid_service.policies.retention import EndedRun, KeptBlob, expired_blobs, expired_runs, retention_words

NOW = datetime(2026, 11, 30, 12)
WEEK = timedelta(days=7)


def test_runs_expire_once_ended_longer_than_retention_ago():
    runs = [EndedRun("old", NOW - WEEK - timedelta(seconds=1)), EndedRun("edge", NOW - WEEK),
            EndedRun("new", NOW - WEEK + timedelta(seconds=1))]
    assert expired_runs(NOW, WEEK, runs) == ["old", "edge"]


def test_blobs_expire_when_unused_for_retention_and_not_needed():
    def B(sha, used_days, needed=False):
        return KeptBlob("t", sha, f"blobs/t/{sha}", NOW - timedelta(days=used_days), needed)

    blobs = [B("a", 8), B("b", 6), B("c", 30, needed=True)]
    assert [b.sha256 for b in expired_blobs(NOW, WEEK, blobs)] == ["a"]


@pytest.mark.parametrize("retention, words", [
    (timedelta(days=7), "7 days"), (timedelta(days=1), "1 day"), (timedelta(hours=36), "1.5 days"),
    (timedelta(hours=2), "2 hours"), (timedelta(seconds=90), "90 s"),
])
def test_retention_words(retention, words):
    assert retention_words(retention) == words


MIB, GIB = 1024 ** 2, 1024 ** 3


@pytest.mark.parametrize("size, threshold, part, expected", [
    (5 * GIB, 5 * GIB, 512 * MIB, None),  # at the threshold: one PUT
    (12 * MIB, 8 * MIB, 5 * MIB, [5 * MIB, 5 * MIB, 2 * MIB]),
    (10 * MIB, 8 * MIB, 5 * MIB, [5 * MIB, 5 * MIB]),
    (10 * MIB, 1, 1, [S3_MIN_PART, S3_MIN_PART]),  # never below S3's 5 MiB
])
def test_part_sizes(size, threshold, part, expected):
    assert part_sizes(size, threshold, part) == expected


def test_parts_grow_to_stay_within_ten_thousand():
    parts = part_sizes(10 ** 13, 5 * GIB, 512 * MIB)  # 10 TB
    assert len(parts) <= 10_000 and sum(parts) == 10 ** 13 and parts[0] == 10 ** 9

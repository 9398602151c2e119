"""Keyset paging of GET /v1/executions, both databases: following X-Next-Cursor lists every run
that matched when the listing began exactly once, newest first, however many runs are created
between two pages; the last page names no next one; a cursor the API did not give out is a 400
with a sentence."""
from __future__ import annotations

import itertools

import pytest

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth
from tests.db.test_db_auth_api import bearer

STATUSES = itertools.cycle([S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.QUEUED, S.FAILED])


@pytest.fixture
def history(engine, make_execution):
    """23 runs of tenant-a (mixed statuses, two batches and none) and a few of tenant-b in between;
    (key of tenant-a, make, every run of tenant-a newest first with its status and batch)."""
    runs = []
    for n in range(23):
        status, batch = next(STATUSES), ("b-one", "b-two", None)[n % 3]
        runs.append((make_execution(status, batch_id=batch), status, batch))
        if n % 5 == 0:
            make_execution(S.FAILED, tenant_id="tenant-b", batch_id="b-one")
    return auth.create_key(engine, "tenant-a"), make_execution, runs[::-1]


def walk(api, key, make=None, **params) -> list[list[str]]:
    """Every page of the listing, following X-Next-Cursor; `make` creates runs before each next page."""
    pages, cursor = [], None
    while True:
        r = api.get("/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})}, headers=bearer(key))
        assert r.status_code == 200, r.text
        pages.append([e["id"] for e in r.json()])
        cursor = r.headers.get("X-Next-Cursor")
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor must move on"
        if make is not None:
            make()


@pytest.mark.parametrize("status, batch", [(None, None), (S.FAILED, None), (None, "b-one"), (S.FAILED, "b-one")])
def test_pages_list_each_matching_run_once_while_runs_are_created(api, history, status, batch):
    key, make, runs = history
    expected = [i for i, st, b in runs if (status is None or st == status) and (batch is None or b == batch)]
    params = {k: v for k, v in {"status": status, "batch": batch, "limit": 2}.items() if v is not None}

    made = []
    pages = walk(api, key, lambda: made.append(make(status or S.QUEUED, batch_id=batch)), **params)

    assert [i for page in pages for i in page] == expected  # none twice, none skipped, newest first
    assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    # The runs created meanwhile are newer than the first page: a new listing shows them first.
    first = api.get("/v1/executions", params={**params, "limit": len(made)}, headers=bearer(key)).json()
    assert [e["id"] for e in first] == made[::-1]


def test_a_last_page_that_is_exactly_full_names_no_next_one(api, history):
    key, _make, runs = history
    pages = walk(api, key, limit=len(runs))
    assert pages == [[i for i, _, _ in runs]]
    assert [len(p) for p in walk(api, key, batch="b-two", limit=4)] == [4, 4]  # 8 runs of b-two


def test_a_cursor_lists_older_runs_of_the_asking_tenant_only(api, history, engine):
    key, _make, runs = history
    r = api.get("/v1/executions", params={"limit": 3}, headers=bearer(key))
    cursor = r.headers["X-Next-Cursor"]
    other = auth.create_key(engine, "tenant-b")
    theirs = api.get("/v1/executions", params={"cursor": cursor, "limit": 100}, headers=bearer(other)).json()
    assert theirs and not {e["id"] for e in theirs} & {i for i, _, _ in runs}


@pytest.mark.parametrize("cursor", ["abc", "-1", "", "1.5", "12345678901234567890", "c2VxOjE"])
def test_a_cursor_the_api_did_not_give_out_is_refused_with_a_sentence(api, history, cursor):
    key, _make, _runs = history
    r = api.get("/v1/executions", params={"cursor": cursor}, headers=bearer(key))
    assert r.status_code == 400, r.text
    assert "X-Next-Cursor" in r.json()["detail"] and "leave cursor out" in r.json()["detail"]

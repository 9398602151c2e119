"""Every list the API reads goes through its index, on both databases: the plan of the very
statement the API runs (queries.list_statement and friends), asked of the database with EXPLAIN
over a history of runs, names the index meant for its shape and never scans the table. A read
that scans costs more with every run stored (issue #13); one that does not, the same.

SQLite is asked as the grids run it, without ANALYZE statistics, and must also not sort (the
index gives the order). PostgreSQL is asked after ANALYZE, as its autovacuum keeps statistics,
with the plan left to its planner (sequential scans allowed): for a handful of matches it may
fetch them through the index as a bitmap and sort them, which costs as many rows as match. The
asked tenant is one of 200, as most tenants of a shared grid are: for a tenant with a large share
of all runs, PostgreSQL may walk ix_executions_seq backwards instead and skip the others' runs
(docs/architecture.md, Read paths)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from rgrid_service.api import queries

# A grid of 200 tenants with years behind it: each tenant 0.5 % of the runs, 10 % failed and 1 %
# queued, every other run of a tenant in one of its 5 batches, logs of 2000 runs.
RUNS, TENANTS, BATCHES = 50_000, 200, 5
LOGGED_RUNS, CHUNKS_EACH = 2000, 10
MIDDLE = RUNS // 2  # a cursor half way down the history
TENANT, BATCH = "t-3", "b-3-2"  # batch ids are the tenant's own, as the CLI makes them (b-<random>)

LIST_SHAPES = {
    # (status, batch): the index meant for it (migration 0009)
    (None, None): "ix_executions_tenant_seq",
    ("failed", None): "ix_executions_tenant_status_seq",
    (None, BATCH): "ix_executions_tenant_batch_seq",
    ("failed", BATCH): "ix_executions_tenant_batch_status_seq",
}
# PostgreSQL may read a whole batch through any index that leads with its id: each costs as many
# rows as the batch has.
BATCH_INDEXES = {"ix_executions_tenant_batch_seq", "ix_executions_tenant_batch_status_seq", "ix_executions_batch_id"}


def fill_history(conn) -> None:
    """RUNS executions and their logs, written by the database itself (a statement per table)."""
    pg = conn.dialect.name == "postgresql"
    empty_list, empty_dict, one_byte = (("'[]'::json", "'{}'::json", "'\\x00'::bytea") if pg
                                        else ("'[]'", "'{}'", "X'00'"))
    series = "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {} - 1) "
    conn.execute(text(series.format(TENANTS) + "INSERT INTO tenants (id, name) SELECT 't-' || n, 't' FROM s"))
    conn.execute(text(series.format(RUNS) + f"""
        INSERT INTO executions (id, tenant_id, status, script, args, env, runtime, timeout_seconds, inputs,
                                batch_id, attempt, max_attempts, log_bytes, log_truncated, seq)
        SELECT 'ex-' || n, 't-' || (n % {TENANTS}),
               CASE WHEN n % 97 < 10 THEN 'failed' WHEN n % 97 = 96 THEN 'queued' ELSE 'succeeded' END,
               's.py', {empty_list}, {empty_dict}, 'python:3.11', 60, {empty_list},
               CASE WHEN n / {TENANTS} % 2 = 1 THEN 'b-' || (n % {TENANTS}) || '-' || (n / {TENANTS * 2} % {BATCHES}) END,
               1, 3, 0, false, n + 1
        FROM s"""))
    conn.execute(text(series.format(LOGGED_RUNS * CHUNKS_EACH) + f"""
        INSERT INTO log_chunks (execution_id, attempt, stream, data)
        SELECT 'ex-' || (n % {LOGGED_RUNS}), 1, 'stdout', {one_byte} FROM s"""))
    if pg:
        conn.execute(text(f"SELECT setval('executions_seq', {RUNS + 1}, false)"))
        conn.execute(text("ANALYZE"))


@pytest.fixture
def history(engine):
    with engine.begin() as conn:
        fill_history(conn)
    return engine


def plan_of(conn, statement) -> list[dict]:
    """The database's plan of `statement`: one dict per step, {"kind", "index", "text"}."""
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        steps = []
        for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all():
            detail = row[-1]
            index = detail.split(" USING COVERING INDEX ")[-1] if " USING COVERING INDEX " in detail else \
                detail.split(" USING INDEX ")[-1] if " USING INDEX " in detail else None
            steps.append({"kind": detail.split()[0], "index": index and index.split()[0], "text": detail})
        return steps
    (plan,), = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql).all()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    steps, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        steps.append({"kind": node["Node Type"], "index": node.get("Index Name"),
                      "text": f"{node['Node Type']} {node.get('Relation Name', '')} {node.get('Index Name', '')}"})
        todo += node.get("Plans", [])
    return steps


def assert_reads_through(steps: list[dict], table: str, index: str | set[str], sorted_by_index: bool = True,
                         postgres_also: set[str] = frozenset()) -> None:
    """SQLite: one SEARCH of the table through `index`, no SCAN of it (whole table or whole index)
    and, when the index gives the order, no temporary B-tree to sort. PostgreSQL: no Seq Scan, and
    `index` (or one of `postgres_also`) read by an Index Scan, Index Only Scan or Bitmap Index Scan."""
    shown = "\n".join(s["text"] for s in steps)
    if any(s["kind"] in ("SEARCH", "SCAN") for s in steps):
        assert not [s for s in steps if s["kind"] == "SCAN" and s["text"].split()[1] == table], shown
        assert [s for s in steps if s["kind"] == "SEARCH" and s["index"] == index], shown
        if sorted_by_index:
            assert "TEMP B-TREE" not in shown, shown
        return
    assert not [s for s in steps if s["kind"] == "Seq Scan"], shown
    assert [s for s in steps if s["kind"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
            and s["index"] in {index} | postgres_also], shown


@pytest.mark.parametrize("cursor", [None, str(MIDDLE)], ids=["first-page", "after-a-cursor"])
@pytest.mark.parametrize("shape", list(LIST_SHAPES), ids=lambda s: f"status={s[0]}-batch={s[1]}")
def test_each_listing_shape_reads_its_index(history, shape, cursor):
    status, batch = shape
    before = None if cursor is None else queries.seq_of_cursor(cursor)
    statement = queries.list_statement(TENANT, status, batch, 51, before)  # limit + 1, as the API asks
    with history.connect() as conn:
        assert_reads_through(plan_of(conn, statement), "executions", LIST_SHAPES[shape],
                             postgres_also=BATCH_INDEXES if batch else set())
        assert conn.execute(statement).all(), "the shape matches runs in this history"


def test_a_batchs_counts_read_its_runs_only(history):
    with history.connect() as conn:
        steps = plan_of(conn, queries.batch_totals_statement(TENANT, BATCH))
    assert_reads_through(steps, "executions", "ix_executions_tenant_batch_status_seq", sorted_by_index=False,
                         postgres_also=BATCH_INDEXES)


@pytest.mark.parametrize("from_start", [True, False], ids=["from-the-start", "after-its-first-chunk"])
def test_a_log_page_reads_the_runs_chunks_after_its_cursor(history, from_start):
    with history.connect() as conn:
        first_chunk = conn.execute(text("SELECT min(id) FROM log_chunks WHERE execution_id = 'ex-7'")).scalar()
        after = 0 if from_start else first_chunk
        steps = plan_of(conn, queries.log_page_statement("ex-7", after, 1001))
    assert_reads_through(steps, "log_chunks", "ix_log_chunks_execution_id_id")

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
(docs/architecture.md, Read paths).

The same holds for the orchestrator's periodic jobs (dispatch, provisioning, sweep, costs, metrics,
retention): every statement they run against the runs' tables, caught as it goes to the database
while each job runs once over the history, reads through an index, so an idle orchestrator costs
the same however many runs are stored (migration 0010)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, insert, text

from rgrid_service.api import queries
from rgrid_service.db.models import TenantQuota, Worker

# A grid of 200 tenants with a year behind it: each tenant 0.5 % of the runs, 10 % failed, 1 %
# queued and 0.1 % running, every other run of a tenant in one of its 5 batches, logs of 2000 runs.
# A run every 10 minutes up to now; the ended ones were dispatched to w-1, finished a minute later
# (an attempt each, priced) and retention deleted their files a week after that; the running ones
# are on w-2, which Ray no longer knows, so w-1 has room and dispatch reads everything it reads.
RUNS, TENANTS, BATCHES = 50_000, 200, 5
EVERY_MINUTES, RETENTION_MINUTES = 10, 7 * 24 * 60
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
    first = (datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=RUNS * EVERY_MINUTES)
             ).strftime("%Y-%m-%d %H:%M:%S")

    def minutes_after_first(minutes: str) -> str:
        if pg:
            return f"(TIMESTAMP '{first}' + ({minutes}) * INTERVAL '1 minute')"
        return f"strftime('%Y-%m-%d %H:%M:%f', '{first}', '+' || ({minutes}) || ' minutes')"

    ended = "n % 97 < 96 AND n % 997 <> 995"
    kept_files = f"n * {EVERY_MINUTES} + 1 + {RETENTION_MINUTES} > {RUNS * EVERY_MINUTES}"
    series = "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {} - 1) "
    conn.execute(text(series.format(TENANTS) + "INSERT INTO tenants (id, name) SELECT 't-' || n, 't' FROM s"))
    conn.execute(text(series.format(RUNS) + f"""
        INSERT INTO executions (id, tenant_id, status, script, args, env, runtime, timeout_seconds, inputs,
                                batch_id, attempt, max_attempts, log_bytes, log_truncated, seq, worker_id,
                                created_at, queued_at, dispatched_at, dispatched_to, started_at, finished_at,
                                files_expired_at)
        SELECT 'ex-' || n, 't-' || (n % {TENANTS}),
               CASE WHEN n % 97 < 10 THEN 'failed' WHEN n % 97 = 96 THEN 'queued'
                    WHEN n % 997 = 995 THEN 'running' ELSE 'succeeded' END,
               's.py', {empty_list}, {empty_dict}, 'python:3.11', 60, {empty_list},
               CASE WHEN n / {TENANTS} % 2 = 1 THEN 'b-' || (n % {TENANTS}) || '-' || (n / {TENANTS * 2} % {BATCHES}) END,
               1, 3, 0, false, n + 1,
               CASE WHEN n % 997 = 995 THEN 'w-2' WHEN n % 97 < 96 THEN 'w-1' END,
               {minutes_after_first(f"n * {EVERY_MINUTES}")}, {minutes_after_first(f"n * {EVERY_MINUTES}")},
               CASE WHEN n % 97 < 96 THEN {minutes_after_first(f"n * {EVERY_MINUTES}")} END,
               CASE WHEN n % 97 < 96 THEN 'w-1' END,
               CASE WHEN n % 97 < 96 THEN {minutes_after_first(f"n * {EVERY_MINUTES}")} END,
               CASE WHEN {ended} THEN {minutes_after_first(f"n * {EVERY_MINUTES} + 1")} END,
               CASE WHEN {ended} AND NOT ({kept_files})
                    THEN {minutes_after_first(f"n * {EVERY_MINUTES} + 1 + {RETENTION_MINUTES}")} END
        FROM s"""))
    conn.execute(text("""
        INSERT INTO execution_attempts (execution_id, attempt, worker_id, started_at, finished_at, cost_eur, outcome)
        SELECT id, 1, worker_id, started_at, finished_at, CASE WHEN finished_at IS NOT NULL THEN 0.001 END,
               CASE WHEN finished_at IS NOT NULL THEN status END
        FROM executions WHERE started_at IS NOT NULL"""))
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
    return plan_of_sql(conn, str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})))


def plan_of_sql(conn, sql: str, parameters=None) -> list[dict]:
    """The database's plan of the SQL text `sql` with the driver's `parameters`, as plan_of."""
    args = () if parameters is None else (parameters,)
    if conn.dialect.name == "sqlite":
        steps = []
        for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, *args).all():
            detail = row[-1]
            index = detail.split(" USING COVERING INDEX ")[-1] if " USING COVERING INDEX " in detail else \
                detail.split(" USING INDEX ")[-1] if " USING INDEX " in detail else None
            steps.append({"kind": detail.split()[0], "index": index and index.split()[0], "text": detail})
        return steps
    (plan,), = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, *args).all()
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


# --- the orchestrator's periodic jobs ---------------------------------------------------------

RUN_TABLES = ("executions", "execution_attempts", "log_chunks")


class NoStore:
    """Retention's object store, for a history whose due files are all gone already."""

    def delete_prefix(self, prefix: str) -> None:
        raise AssertionError(f"retention found files to delete ({prefix}): the history says none are due")


def orchestrator_jobs(engine) -> dict[str, callable]:
    """Each periodic job of the orchestrator, as it reads: job name -> a function running it once.
    The grid's worker w-1 is alive on Ray with 2 slots; tenant TENANT has a limit of running runs."""
    from rgrid_service import lifecycle
    from rgrid_service.fleet import records
    from rgrid_service.fleet.prices import DEFAULT_PRICES
    from rgrid_service.orchestrator.costs import CostRecorder
    from rgrid_service.orchestrator.metrics import RunObserver
    from rgrid_service.orchestrator.retention import expire_blobs, expire_runs
    from rgrid_service.orchestrator.snapshot import RayNode, dispatch_snapshot, fleet_snapshot, health_snapshot

    nodes = {"w-1": RayNode("n-1", True, 2)}

    def dispatch():
        with engine.connect() as conn:
            dispatch_snapshot(conn, nodes, redispatch_after=60, placement_window=600, prefetch=2,
                              dispatch_interval=0.5, default_running_limit=0)

    def provisioning():
        with engine.connect() as conn:
            fleet_snapshot(conn, "local", default_running_limit=0)
        records.desired_servers(engine, "local")

    def sweep():
        with engine.connect() as conn:
            now, _beats = health_snapshot(conn, nodes)
        records.record_ray_nodes(engine, {"w-1": "n-1"})
        lifecycle.expire_uploads(engine, now - timedelta(minutes=11))
        lifecycle.expire_leases(engine, now - timedelta(minutes=3))

    def costs():
        CostRecorder(engine, DEFAULT_PRICES, timedelta(hours=1)).tick()

    def metrics():
        observer = RunObserver(engine)
        observer.start()
        observer.tick()

    def retention():
        assert expire_runs(engine, NoStore(), timedelta(minutes=RETENTION_MINUTES), 500) == []
        expire_blobs(engine, NoStore(), timedelta(minutes=RETENTION_MINUTES), 500)

    return {"dispatch": dispatch, "provisioning": provisioning, "sweep": sweep, "costs": costs,
            "metrics": metrics, "retention": retention}


@pytest.fixture
def orchestrated_history(history):
    with history.begin() as conn:
        conn.execute(insert(Worker).values(id="w-1", provider="local", state="active", slots=2,
                                           created_at=datetime.now(timezone.utc).replace(tzinfo=None)))
        conn.execute(insert(TenantQuota).values(tenant_id=TENANT, max_running_runs=3))
    return history


def statements_of(engine, job) -> list[tuple[str, object]]:
    """The statements (SQL text, parameters) that `job` sends to the database, in order."""
    sent = []

    def catch(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        job()
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    return sent


def touches(sql: str) -> list[str]:
    lowered = sql.lower()
    return [t for t in RUN_TABLES if f" {t} " in f" {lowered} ".replace("\n", " ") or f" {t}." in lowered]


def assert_no_scan(steps: list[dict], sql: str) -> None:
    """No step reads a whole table of runs (SQLite: SCAN of it, also of a whole index of it;
    PostgreSQL: a Seq Scan of it)."""
    shown = "\n".join(s["text"] for s in steps)
    scans = [s for s in steps if (s["kind"] == "SCAN" and s["text"].split()[1] in RUN_TABLES)
             or (s["kind"] == "Seq Scan" and s["text"].split()[2] in RUN_TABLES)]
    assert not scans, f"{sql}\n{shown}"


JOBS = ["dispatch", "provisioning", "sweep", "costs", "metrics", "retention"]


@pytest.mark.parametrize("job", JOBS)
def test_each_orchestrator_job_reads_runs_through_indexes(orchestrated_history, job):
    engine = orchestrated_history
    sent = [(sql, p) for sql, p in statements_of(engine, orchestrator_jobs(engine)[job]) if touches(sql)]
    assert sent, f"the {job} job reads the runs' tables"
    with engine.connect() as conn:
        for sql, parameters in sent:
            assert_no_scan(plan_of_sql(conn, sql, parameters), sql)


# The statements that read history before migration 0010: a piece of each one's SQL -> (the job
# that runs it, the index it must read, whether that index gives the order asked for; the count
# per worker groups the window's few runs in a temporary B-tree).
FIXED_BY_0010 = {
    "WHERE executions.dispatched_at >=": ("dispatch", "ix_executions_dispatched_at_to", False),
    "executions.files_expired_at IS NULL": ("retention", "ix_executions_files_expired_finished", True),
}


@pytest.mark.parametrize("piece", list(FIXED_BY_0010), ids=["recent-dispatches", "retention-due-runs"])
def test_the_jobs_that_read_history_read_their_index(orchestrated_history, piece):
    job, index, ordered = FIXED_BY_0010[piece]
    engine = orchestrated_history
    sent = [(sql, p) for sql, p in statements_of(engine, orchestrator_jobs(engine)[job]) if piece in sql]
    assert len(sent) == 1, [sql for sql, _ in sent]
    with engine.connect() as conn:
        (sql, parameters), = sent
        assert_reads_through(plan_of_sql(conn, sql, parameters), "executions", index, sorted_by_index=ordered)


def test_a_tenants_running_and_placed_runs_are_counted_through_its_status_index(orchestrated_history):
    """The count behind a tenant's limit of running runs (dispatch, with a queued run of a tenant
    with a limit) reads that tenant's live runs only, not its history."""
    engine = orchestrated_history
    sent = [(sql, p) for sql, p in statements_of(engine, orchestrator_jobs(engine)["dispatch"])
            if "executions.tenant_id IN" in sql and "count(*)" in sql]
    assert sent, "the dispatch job counts the limited tenants' runs"
    with engine.connect() as conn:
        for sql, parameters in sent:
            assert_reads_through(plan_of_sql(conn, sql, parameters), "executions", "ix_executions_tenant_status_seq",
                                 sorted_by_index=False, postgres_also={"ix_executions_status", "ix_executions_status_worker"})

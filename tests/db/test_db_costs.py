"""Run costs on both databases: the orchestrator's cost tick prices ended attempts once, from an
index-backed cursor; the API shows each run's cost and why it is null or 0, a batch's total, the
fleet's spend per clock hour (operator only) and the queue and workers as Prometheus metrics."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select, update

from rgrid_service import auth, lifecycle
from rgrid_service.db.models import Execution, ExecutionAttempt, Worker
from rgrid_service.fleet.prices import DEFAULT_PRICES
from rgrid_service.orchestrator.costs import CostRecorder
from rgrid_service.policies.costs import clock_hour
from tests.db.test_db_auth_api import bearer

HOUR = timedelta(hours=1)
CX23 = DEFAULT_PRICES.hourly("cx23")


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


def operator_key(engine) -> str:
    return auth.create_key(engine, "ops", "the operator", scope=auth.OPERATOR_SCOPE)


@pytest.fixture
def fleet(engine, make_execution):
    """Three hours ago at :20, w-1 (cx23, 2 slots) was made, and deleted 100 min later; w-0 is a
    local worker and w-9 a type the table does not price. Runs: `two` lost its first attempt on
    w-1 and succeeded on its second, across w-1's first paid-hour boundary; `local` and `odd` ran
    on w-0 and w-9; `running` is still running on w-1."""
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
    t0 = clock_hour(now) - 3 * HOUR + minutes(20)
    with engine.begin() as conn:
        conn.execute(insert(Worker), [
            dict(id="w-1", provider="hetzner", server_type="cx23", state="deleted", slots=2, created_at=t0,
                 server_id="101", deleted_at=t0 + minutes(100)),
            dict(id="w-0", provider="local", server_type="local", state="active", slots=2, created_at=t0,
                 server_id=None, deleted_at=None),
            dict(id="w-9", provider="hetzner", server_type="cx99", state="active", slots=2, created_at=t0,
                 server_id="109", deleted_at=None),
        ])
    runs = {
        "two": make_execution("succeeded", batch_id="b-1", attempt=2, worker_id="w-1", queued_at=t0),
        "local": make_execution("succeeded", batch_id="b-1", attempt=1, worker_id="w-0", queued_at=t0),
        "odd": make_execution("failed", attempt=1, worker_id="w-9", queued_at=t0),
        "running": make_execution("running", attempt=1, worker_id="w-1", queued_at=t0),
        "waiting": make_execution("queued", batch_id="b-1", queued_at=t0),
    }
    attempts = [
        (runs["two"], 1, "w-1", 10, 20, "lost"),
        (runs["two"], 2, "w-1", 50, 70, "succeeded"),
        (runs["local"], 1, "w-0", 0, 30, "succeeded"),
        (runs["odd"], 1, "w-9", 0, 30, "failed"),
        (runs["running"], 1, "w-1", 80, None, None),
    ]
    with engine.begin() as conn:
        for ex, n, w, start, end, outcome in attempts:
            conn.execute(insert(ExecutionAttempt).values(
                execution_id=ex, attempt=n, worker_id=w, started_at=t0 + minutes(start),
                finished_at=None if end is None else t0 + minutes(end), outcome=outcome))
    return t0, runs


def costs(engine, table) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(table.id, table.cost_eur)).all())


def test_the_cost_tick_prices_each_ended_attempt_once_and_sums_per_run(engine, fleet):
    t0, runs = fleet
    recorder = CostRecorder(engine, DEFAULT_PRICES, HOUR)
    assert recorder.tick() == 4  # every ended attempt; the running one waits
    # 10 min + 20 min on one slot of two: 30 slot-minutes of 120 per paid hour, whichever hour.
    expected = CX23 * 1800 / 7200
    runs_cost = costs(engine, Execution)
    assert runs_cost[runs["two"]] == pytest.approx(expected)
    assert runs_cost[runs["local"]] == 0.0 and runs_cost[runs["odd"]] == 0.0
    assert runs_cost[runs["running"]] is None and runs_cost[runs["waiting"]] is None
    assert recorder.tick() == 0  # nothing is priced twice
    # The running attempt ends; a new recorder (an orchestrator restart) finds it from the newest priced end.
    with engine.begin() as conn:
        conn.execute(update(ExecutionAttempt).where(ExecutionAttempt.execution_id == runs["running"])
                     .values(finished_at=t0 + minutes(110), outcome="succeeded"))
        conn.execute(update(Execution).where(Execution.id == runs["running"]).values(status="succeeded"))
    again = CostRecorder(engine, DEFAULT_PRICES, HOUR)
    assert again.tick() == 1 and again.tick() == 0
    assert costs(engine, Execution)[runs["running"]] == pytest.approx(CX23 * 1800 / 7200)


def test_the_first_run_that_ends_is_priced(engine, make_execution):
    # Its end is stamped by the database clock, which SQLite keeps with fewer decimals than a
    # bound parameter has: the cursor must still find it when it is the oldest end there is.
    with engine.begin() as conn:
        conn.execute(insert(Worker).values(id="w-1", provider="hetzner", server_type="cx23", state="active",
                                           slots=2, server_id="1", created_at=lifecycle.db_now(conn)))
    recorder = CostRecorder(engine, DEFAULT_PRICES, HOUR)
    assert recorder.tick() == 0
    run = make_execution("queued")
    lease, _spec = lifecycle.claim_run(engine, run, "w-1")
    assert lifecycle.finish(engine, lease, "succeeded", 0, None, [])
    assert recorder.tick() == 1
    assert costs(engine, Execution)[run] >= 0.0


def test_the_api_shows_each_cost_and_why_it_is_null_or_zero(engine, api, fleet):
    t0, runs = fleet
    CostRecorder(engine, DEFAULT_PRICES, HOUR).tick()
    key = auth.create_key(engine, "tenant-a")
    view = {name: api.get(f"/v1/executions/{ex}", headers=bearer(key)).json() for name, ex in runs.items()}
    assert view["two"]["cost_eur"] == pytest.approx(CX23 / 4) and view["two"]["cost_note"] is None
    assert [a["cost_eur"] for a in view["two"]["attempts"]] == pytest.approx([CX23 / 12, CX23 / 6])
    assert view["local"]["cost_eur"] == 0.0 and "local worker" in view["local"]["cost_note"]
    assert view["odd"]["cost_eur"] == 0.0 and "no price for type cx99" in view["odd"]["cost_note"]
    assert view["running"]["cost_eur"] is None and view["running"]["cost_note"].startswith("Priced when")
    assert view["waiting"]["cost_eur"] is None and view["waiting"]["cost_note"].startswith("Not run yet")
    listed = {ex["id"]: ex for ex in api.get("/v1/executions", headers=bearer(key)).json()}
    assert "local worker" in listed[runs["local"]]["cost_note"]
    batch = api.get("/v1/batches/b-1", headers=bearer(key)).json()
    assert batch["cost_eur"] == pytest.approx(CX23 / 4) and batch["total"] == 3


def test_fleet_costs_per_clock_hour_for_operators_only(engine, api, fleet):
    t0, runs = fleet
    key = auth.create_key(engine, "tenant-a")
    assert api.get("/v1/fleet/costs", headers=bearer(key)).status_code == 403
    body = api.get("/v1/fleet/costs?hours=4", headers=bearer(operator_key(engine))).json()
    hours = {h["hour"][11:16]: h for h in body["hours"]}
    assert len(body["hours"]) == 4
    first, second = (clock_hour(t0) + i * HOUR for i in range(2))
    a, b = hours[first.strftime("%H:%M")], hours[second.strftime("%H:%M")]
    # w-1's paid hour 0 began in t0's clock hour: 10 min of `two`'s first attempt + 10 of its second.
    assert (a["spend_eur"], a["runs_eur"], a["workers"]) == pytest.approx((CX23, CX23 * 1200 / 7200, 1))
    # Paid hour 1 began an hour later: 10 more min of `two` and 40 of `running` (from +80 min to
    # the hour's end; the worker was deleted at +100, so it has no paid hour after that).
    assert (b["spend_eur"], b["runs_eur"], b["workers"]) == pytest.approx((CX23, CX23 * 3000 / 7200, 1))
    assert a["idle_eur"] == pytest.approx(CX23 - a["runs_eur"])
    assert body["spend_eur"] == pytest.approx(2 * CX23)  # w-9 has no price, w-0 is local: nothing
    assert body["prices"]["cx23"] == CX23


def test_api_metrics_need_an_operator_and_count_the_queue_and_workers(engine, api, fleet):
    key = auth.create_key(engine, "tenant-a")
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers=bearer(key)).status_code == 403
    scraped = api.get("/metrics", headers=bearer(operator_key(engine)))
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(scraped.text) for s in f.samples}
    assert samples[("rgrid_queue_depth", ())] == 1
    assert samples[("rgrid_runs", (("status", "running"),))] == 1
    assert samples[("rgrid_runs", (("status", "uploading"),))] == 0
    assert samples[("rgrid_workers", (("state", "active"),))] == 2
    assert samples[("rgrid_workers", (("state", "deleted"),))] == 1


def test_a_stopped_local_grid_ends_its_workers_paid_hours(engine, db_url, fleet):
    from rgrid_service.localgrid.bootstrap import retire_workers
    from rgrid_service.fleet.spend import workers_billed_since

    t0, _runs = fleet
    with engine.connect() as conn:
        # Priced workers only (w-0 is local, w-9 has no price), w-1 deleted after t0.
        assert [w.worker_id for w in workers_billed_since(conn, t0, HOUR, DEFAULT_PRICES)] == ["w-1"]
    retire_workers(db_url)  # `rgrid local down` (and the next up): every server of the grid is gone
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Worker.id, Worker.state, Worker.deleted_at)).all()}
        now = lifecycle.db_now(conn)
    assert {w: r.state for w, r in rows.items()} == {"w-1": "deleted", "w-0": "deleted", "w-9": "deleted"}
    assert rows["w-1"].deleted_at == t0 + minutes(100)  # kept
    assert all(r.deleted_at <= now for r in rows.values())

"""On a real local grid: both /metrics endpoints after a run (parsed with prometheus_client's own
parser; the histograms count the run), and the run's cost as the API and `rgrid status` show it
(the process fleet's workers are local: 0, and the note says why)."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rgrid_core.localstate import load_state
from rgrid_service import auth
from tests.conftest import wait_until


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_on_both_endpoints_count_a_run_and_its_cost_is_explained(grid):
    state = load_state(grid.home)
    assert state.orchestrator_metrics_url.startswith("http://127.0.0.1:")

    def scrape() -> dict | None:
        try:
            return samples(httpx.get(state.orchestrator_metrics_url, timeout=10).text)
        except httpx.ConnectError:
            return None  # the orchestrator is still starting

    before = wait_until(scrape, 60, "the orchestrator's metrics to answer")
    count = ("rgrid_run_submit_to_finished_seconds_count", ())
    ex_id = grid.submit("print('measured')\n")
    assert grid.wait_all([ex_id], timeout=120)[ex_id]["status"] == "succeeded"

    after = wait_until(lambda: (lambda s: s if s[count] > before.get(count, 0) else None)(scrape()), 60,
                       "the run to be observed")
    assert after[count] == before[count] + 1
    assert after[("rgrid_run_queued_to_running_seconds_count", ())] >= before[
        ("rgrid_run_queued_to_running_seconds_count", ())] + 1
    assert after[("rgrid_runs_ended_total", (("status", "succeeded"),))] >= 1
    assert ("rgrid_provider_errors_total", (("kind", "quota"),)) in after
    assert any(name == "rgrid_fleet_update_duration_seconds_count" for name, _ in after)

    with grid.api(None) as api:
        assert api.get("/metrics").status_code == 401
    with grid.api(auth.create_key(grid.engine(), "someone")) as api:
        assert api.get("/metrics").status_code == 403  # a tenant key
    with grid.api() as api:  # the local grid's key is an operator's
        scraped = api.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    api_side = samples(scraped.text)
    assert api_side[("rgrid_workers", (("state", "active"),))] >= 1
    assert ("rgrid_queue_depth", ()) in api_side and ("rgrid_runs", (("status", "running"),)) in api_side

    # Its cost: the local workers have no price, so 0, and the note says so.
    with grid.api() as api:
        ex = wait_until(lambda: (lambda e: e if e["cost_eur"] is not None else None)(
            api.get(f"/v1/executions/{ex_id}").json()), 60, "the run to be priced")
    assert ex["cost_eur"] == 0.0 and "local worker" in ex["cost_note"], ex
    shown = grid.rgrid("status", ex_id)
    assert shown.returncode == 0 and b"local worker" in shown.stdout, shown
    local = grid.rgrid("local", "status")
    assert state.orchestrator_metrics_url.encode() in local.stdout, local.stdout

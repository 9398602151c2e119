"""`rgrid workers`, `rgrid workers retire`, `rgrid fleet preview` and `rgrid fleet history` against
a fake API: what they ask for, what people see, --json, and the API's 403 sentence passed on."""
from __future__ import annotations

import json

from rgrid.cli import fleet
from rgrid.client import ApiError
from tests.unit.test_cli_commands import api, invoke, text  # noqa: F401 - api is a fixture

NEEDS_OPERATOR = ("This needs an operator API key; tenant keys see only their own runs. Ask your grid's operator, "
                  "or create one with `python -m rgrid_service.admin create-key NAME --operator`.")

WORKERS = {"now": "2026-11-30T02:00:00.000000Z", "workers": [
    {"id": "w-1", "provider": "local", "state": "active", "server_type": "cx23", "location": "fsn1", "server_id": "7",
     "slots": 2, "slots_used": 1, "created_at": "2026-11-30T01:48:00.000000Z", "age_seconds": 720.0,
     "paid_hour_left_seconds": 2880.0, "last_heartbeat_at": "2026-11-30T01:59:57.000000Z",
     "ray_node_id": "3f2a9c1b7d4e" + "0" * 44, "dead_reason": None, "retire_requested_at": None},
    {"id": "w-2", "provider": "local", "state": "draining", "server_type": "cx23", "location": "fsn1",
     "server_id": "8", "slots": 2, "slots_used": 0, "created_at": "2026-11-30T00:59:00.000000Z",
     "age_seconds": 3660.0, "paid_hour_left_seconds": 3540.0, "last_heartbeat_at": None, "ray_node_id": None,
     "dead_reason": None, "retire_requested_at": "2026-11-30T01:59:00.000000Z"},
]}


def test_workers_lists_slots_age_paid_hour_heartbeat_and_ray_node(api):
    api.routes[("GET", "/v1/workers")] = WORKERS
    r = invoke("workers")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("w-")}
    assert "active" in rows["w-1"] and "1/2" in rows["w-1"] and "12m00s" in rows["w-1"] and "48m00s" in rows["w-1"]
    assert "3s ago" in rows["w-1"] and "3f2a9c1b7d4e" in rows["w-1"] and "0" * 20 not in rows["w-1"]
    assert "Retired by hand: w-2 (each goes once idle)." in text(r.stderr) and "never" in rows["w-2"] and "1h01m" in rows["w-2"]


def test_workers_json_is_the_apis_answer(api):
    api.routes[("GET", "/v1/workers")] = WORKERS
    r = invoke("workers", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == WORKERS


def test_workers_with_a_tenant_key_passes_the_apis_sentence_on(api):
    api.routes[("GET", "/v1/workers")] = ApiError(NEEDS_OPERATOR, 403)
    for args in (("workers",), ("fleet", "preview"), ("fleet", "history")):
        api.routes[("GET", "/v1/fleet/preview")] = ApiError(NEEDS_OPERATOR, 403)
        api.routes[("GET", "/v1/fleet/history")] = ApiError(NEEDS_OPERATOR, 403)
        r = invoke(*args)
        assert r.exit_code == 1 and text(r.stderr) == f"rgrid: {NEEDS_OPERATOR}", args


def test_workers_retire_posts_and_says_what_happens_next(api):
    api.routes[("POST", "/v1/workers/w-3/retire")] = {
        "id": "w-3", "state": "draining", "message": "w-3 is draining: it takes no new runs, and the next fleet "
                                                     "update after its runs end deletes its server."}
    r = invoke("workers", "retire", "w-3")
    assert r.exit_code == 0 and "w-3 is draining" in text(r.stderr)
    assert api.called("POST", "/v1/workers/w-3/retire") == 1
    api.routes[("POST", "/v1/workers/w-9/retire")] = ApiError("No worker 'w-9'. `rgrid workers` lists them.", 404)
    r = invoke("workers", "retire", "w-9")
    assert r.exit_code == 1 and "No worker 'w-9'" in text(r.stderr)


PREVIEW = {
    "at": "2026-11-30T02:00:00.000000Z", "provider": "hetzner", "queued": 1, "trigger": "provisioning",
    "actions": [{"kind": "provision", "workers": [], "trigger": "provisioning",
                 "reason": "1 more: 1 queued against 0 free, 0 coming and 0 ending-soon slots: 1 more worker wanted"},
                {"kind": "delete", "workers": ["w-2"], "trigger": "manual", "reason": "w-2 retired by hand and idle: deleted"}],
    "new_workers": ["w-3"], "desired": ["w-1", "w-3"], "existing": ["w-1", "w-2"],
    "diff": {"create": ["w-3"], "delete": ["w-2"], "replace": []},
    "servers": [{"worker_id": "w-3", "change": "create", "server_type": "cx23", "hourly_eur": 0.0064, "monthly_eur": 3.99},
                {"worker_id": "w-2", "change": "delete", "server_type": "odd", "hourly_eur": None, "monthly_eur": None}],
    "cost": {"now_hourly_eur": 0.0064, "hourly_eur": 0.0064, "monthly_eur": 3.99, "prices_as_of": ["2026-04-15"],
             "missing": ["The price table has no price for server type 'odd' (w-2), so it is left out of the figures; "
                         "add it to the table RGRID_PRICE_TABLE names."]},
}


def test_fleet_preview_shows_plan_diff_and_price(api):
    api.routes[("GET", "/v1/fleet/preview")] = PREVIEW
    r = invoke("fleet", "preview")
    assert r.exit_code == 0, r.output
    shown = text(r.stdout)
    assert "1 queued; servers now: w-1, w-2." in shown
    assert "provision w-3 1 more: 1 queued against" in shown and "delete w-2 w-2 retired by hand" in shown
    assert "+ w-3 create cx23 €0.0064 €3.99" in shown and "- w-2 delete odd no price no price" in shown
    assert "Cost: €0.0064/h now; change +€0.0064/h, +€3.99/month (prices of 2026-04-15)." in shown
    assert "no price for server type 'odd'" in text(r.stderr)


def test_fleet_preview_of_a_fleet_with_nothing_to_do(api):
    api.routes[("GET", "/v1/fleet/preview")] = {**PREVIEW, "actions": [], "trigger": None, "new_workers": [],
                                                 "servers": [], "diff": {"create": [], "delete": [], "replace": []},
                                                 "cost": {**PREVIEW["cost"], "hourly_eur": 0.0, "monthly_eur": 0.0,
                                                          "missing": []}}
    r = invoke("fleet", "preview")
    shown = text(r.stdout)
    assert r.exit_code == 0 and "would change nothing" in shown and "no change" in shown
    assert "change €0.0000/h, €0.00/month" in shown


def test_fleet_preview_json_and_a_busy_fleet(api):
    api.routes[("GET", "/v1/fleet/preview")] = PREVIEW
    r = invoke("fleet", "preview", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == PREVIEW
    api.routes[("GET", "/v1/fleet/preview")] = ApiError("The fleet is being updated; try again in a few seconds.", 409)
    r = invoke("fleet", "preview")
    assert r.exit_code == 1 and "The fleet is being updated; try again in a few seconds." in text(r.stderr)


HISTORY = {"updates": [
    {"id": 9, "at": "2026-11-30T02:00:00.000000Z", "trigger": "manual", "ok": True, "summary": "deleted w-2",
     "diff": {"create": [], "delete": ["w-2"], "replace": []}, "duration_seconds": 4.2},
    {"id": 7, "at": "2026-11-30T01:50:00.000000Z", "trigger": "provisioning", "ok": False,
     "summary": "Worker limit reached. Upgrade account or wait for workers to free up.", "diff": None,
     "duration_seconds": 0.6},
    {"id": 4, "at": "2026-11-30T01:40:00.000000Z", "trigger": "provisioning", "ok": True, "summary": "created w-1, w-2",
     "diff": {"create": ["w-1", "w-2"], "delete": [], "replace": []}, "duration_seconds": 75.0},
], "next_before": 4}


NO_SPEND = {"hours": [{"hour": "2026-11-30T01:00:00.000000Z", "spend_eur": 0.0, "runs_eur": 0.0, "idle_eur": 0.0,
                       "workers": 0}], "spend_eur": 0.0, "runs_eur": 0.0, "idle_eur": 0.0, "prices": {"cx23": 0.0064},
            "prices_as_of": {"cx23": "2026-04-15"}}
SPEND = {**NO_SPEND, "spend_eur": 0.0192, "runs_eur": 0.0021, "idle_eur": 0.0171, "hours": [
    {"hour": "2026-11-30T00:00:00.000000Z", "spend_eur": 0.0, "runs_eur": 0.0, "idle_eur": 0.0, "workers": 0},
    {"hour": "2026-11-30T01:00:00.000000Z", "spend_eur": 0.0128, "runs_eur": 0.0021, "idle_eur": 0.0107, "workers": 2},
    {"hour": "2026-11-30T02:00:00.000000Z", "spend_eur": 0.0064, "runs_eur": 0.0, "idle_eur": 0.0064, "workers": 1}]}


def test_fleet_history_shows_each_update_and_the_next_page(api):
    api.routes[("GET", "/v1/fleet/history")] = HISTORY
    api.routes[("GET", "/v1/fleet/costs")] = NO_SPEND
    r = invoke("fleet", "history", "--limit", "3")
    assert r.exit_code == 0, r.output
    assert ("GET", "/v1/fleet/history", {"limit": 3}) in api.calls
    rows = [line for line in r.stdout.splitlines() if "2026-11-30" in line]
    assert len(rows) == 3
    assert "manual" in rows[0] and "-w-2" in rows[0] and "4s" in rows[0] and "ok" in rows[0]
    assert "Worker limit reached" in text(r.stdout)
    assert "+w-1 +w-2" in rows[2] and "1m15s" in rows[2]
    assert "rgrid fleet history --before 4" in text(r.stderr)
    invoke("fleet", "history", "--before", "4")
    assert api.calls[-2] == ("GET", "/v1/fleet/history", {"limit": 20, "before": 4})


def test_fleet_history_json_holds_every_section(api, monkeypatch):
    api.routes[("GET", "/v1/fleet/history")] = HISTORY
    api.routes[("GET", "/v1/fleet/costs")] = SPEND
    r = invoke("fleet", "history", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"updates": HISTORY, "spend": SPEND}
    # Another part is one more section: fetched, shown, and in the JSON under its key.
    api.routes[("GET", "/v1/fleet/extra")] = {"n": 1}
    extra = fleet.Section("extra", lambda c, o: c.get("/v1/fleet/extra"),
                          lambda data, o: fleet.out.print(f"extra section: {data['n']}"))
    monkeypatch.setattr(fleet, "HISTORY_SECTIONS", [*fleet.HISTORY_SECTIONS, extra])
    r = invoke("fleet", "history")
    assert "extra section: 1" in r.stdout and "manual" in r.stdout
    assert json.loads(invoke("fleet", "history", "--json").stdout)["extra"] == {"n": 1}


def test_no_updates_yet(api):
    api.routes[("GET", "/v1/fleet/history")] = {"updates": [], "next_before": None}
    api.routes[("GET", "/v1/fleet/costs")] = NO_SPEND
    r = invoke("fleet", "history")
    assert r.exit_code == 0 and "No fleet updates yet." in text(r.stderr)
    assert "No spend in the last 1 hour(s)" in text(r.stderr)


def test_fleet_history_shows_spend_per_hour(api):
    api.routes[("GET", "/v1/fleet/history")] = {"updates": [], "next_before": None}
    api.routes[("GET", "/v1/fleet/costs")] = SPEND
    r = invoke("fleet", "history", "--hours", "3")
    assert r.exit_code == 0, r.output
    assert ("GET", "/v1/fleet/costs", {"hours": 3}) in api.calls
    rows = [line for line in r.stdout.splitlines() if "2026-11-30" in line or line.startswith("total")]
    assert len(rows) == 3  # the hour without spend is left out
    assert "€0.0128" in rows[0] and "€0.0021" in rows[0] and "€0.0107" in rows[0] and " 2 " in rows[0]
    assert "€0.0192" in rows[2] and "€0.0171" in rows[2]

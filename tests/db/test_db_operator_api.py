"""The operator scope and the fleet endpoints, on SQLite and PostgreSQL: tenant keys get 403 with a
sentence on every operator endpoint, operator keys get 200; the workers view, the history's pages,
a preview that changes nothing, retiring by hand; operator keys from the admin command and the
local grid's bootstrap."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from rgrid_core.states import WorkerState as W
from rgrid_service import auth, lifecycle
from rgrid_service.api.app import create_app
from rgrid_service.db.models import ApiKey, FleetEvent, Worker
from rgrid_service.db.session import engine_for
from rgrid_service.fleet import records
from rgrid_service.settings import ServiceSettings
from tests.db.test_db_auth_api import bearer, is_sentence


@pytest.fixture
def fleet_api(db_url, tmp_path):
    """The API of a grid whose fleet is the process fleet in tmp_path (no worker process runs)."""
    from fastapi.testclient import TestClient

    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", local_grid_home=str(tmp_path)))
    cached = engine_for(db_url)
    with TestClient(app) as client:
        yield client
    cached.dispose()


OPERATOR_TAGS = {"fleet", "cluster"}


def operator_routes(client) -> set[tuple[str, str]]:
    """(method, path) of every operation the API documents under an operator tag."""
    paths = client.get("/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method, op in ops.items()
            if OPERATOR_TAGS & set(op.get("tags", []))}


KNOWN = {("GET", "/v1/cluster"), ("GET", "/v1/workers"), ("POST", "/v1/workers/{worker_id}/retire"),
         ("GET", "/v1/fleet/preview"), ("GET", "/v1/fleet/history")}


def test_tenant_keys_get_403_on_every_operator_endpoint_and_operator_keys_200(fleet_api, engine):
    routes = operator_routes(fleet_api)
    assert KNOWN <= routes, sorted(routes)
    tenant = auth.create_key(engine, "tenant-a")
    operator = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    assert auth.caller_for_key(engine, operator).operator and not auth.caller_for_key(engine, tenant).operator
    records.request_workers(engine, 1, "local", "local", "local", 2)
    lifecycle.register_worker(engine, "w-1", "local", 2)
    for method, path in sorted(routes):
        url = path.replace("{worker_id}", "w-1")
        r = fleet_api.request(method, url, headers=bearer(tenant))
        assert r.status_code == 403, (method, path, r.text)
        assert is_sentence(r.json()["detail"]) and "operator API key" in r.json()["detail"]
        assert "--operator" in r.json()["detail"]  # the next step
        assert fleet_api.request(method, url).status_code == 401
    # The tenant's retire changed nothing.
    assert records.desired_servers(engine, "local")[0].worker_id == "w-1"
    for method, path in sorted(routes):
        r = fleet_api.request(method, path.replace("{worker_id}", "w-1"), headers=bearer(operator))
        assert r.status_code == 200, (method, path, r.text)
    # Tenant endpoints still work for both keys; the operator key has its own tenant's runs.
    assert fleet_api.get("/v1/executions", headers=bearer(tenant)).status_code == 200
    assert fleet_api.get("/v1/executions", headers=bearer(operator)).json() == []


def test_workers_show_slots_used_age_paid_hour_heartbeat_and_ray_node(fleet_api, engine, make_execution):
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    records.request_workers(engine, 4, "hetzner", "cx23", "fsn1", 2)
    records.record_servers(engine, "hetzner", [records.Server("w-1", "101", "running")])
    lifecycle.register_worker(engine, "w-1", "hetzner", 2)
    lifecycle.register_worker(engine, "w-2", "hetzner", 2)
    ex = make_execution()
    lifecycle.claim_run(engine, ex, "w-1")
    assert records.record_ray_nodes(engine, {"w-1": "a" * 56, "w-9": "b" * 56}) == ["w-1"]  # w-9 has no record
    assert records.record_ray_nodes(engine, {"w-1": "a" * 56}) == []  # unchanged: no write
    lifecycle.declare_dead(engine, "w-2", "no heartbeat from w-2 since 01:00:00 (2m00s)")
    records.move(engine, ["w-4"], W.DELETING)
    records.record_servers(engine, "hetzner", [records.Server("w-1", "101", "running")])  # w-4 gone: deleted

    view = fleet_api.get("/v1/workers", headers=bearer(key)).json()
    assert view["now"].endswith("Z")
    shown = {w["id"]: w for w in view["workers"]}
    assert set(shown) == {"w-1", "w-2", "w-3"}  # deleted workers are not listed
    w1 = shown["w-1"]
    assert (w1["state"], w1["slots_used"], w1["slots"], w1["server_id"]) == ("active", 1, 2, "101")
    assert (w1["server_type"], w1["location"], w1["ray_node_id"]) == ("cx23", "fsn1", "a" * 56)
    assert w1["last_heartbeat_at"] and 0 <= w1["age_seconds"] < 120
    assert 3600 - 120 < w1["paid_hour_left_seconds"] <= 3600
    assert shown["w-2"]["state"] == "dead" and shown["w-2"]["dead_reason"].startswith("no heartbeat")
    assert shown["w-3"]["state"] == "requested" and shown["w-3"]["last_heartbeat_at"] is None


def test_history_lists_updates_newest_first_in_pages_by_event_id(fleet_api, engine):
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    records.record_event(engine, "decision", "requested w-1: 1 queued", "provisioning")
    records.record_event(engine, "update", "created w-1", "provisioning", 4.25, diff={"create": ["w-1"], "delete": [],
                                                                                        "replace": []})
    records.record_event(engine, "error", "Worker limit reached. Upgrade account or wait for workers to free up.",
                         "provisioning", 0.5, ok=False)
    records.record_event(engine, "update", "deleted w-1", "manual", 2.0, diff={"create": [], "delete": ["w-1"],
                                                                                "replace": []})
    records.record_event(engine, "update", "created w-2", "replacement", 3.0, diff={"create": ["w-2"], "delete": [],
                                                                                      "replace": []})

    first = fleet_api.get("/v1/fleet/history", params={"limit": 2}, headers=bearer(key)).json()
    assert [u["trigger"] for u in first["updates"]] == ["replacement", "manual"]
    assert first["updates"][1]["diff"] == {"create": [], "delete": ["w-1"], "replace": []}
    assert first["updates"][1]["duration_seconds"] == 2.0 and first["updates"][1]["ok"] is True
    second = fleet_api.get("/v1/fleet/history", params={"limit": 2, "before": first["next_before"]},
                           headers=bearer(key)).json()
    assert [u["ok"] for u in second["updates"]] == [False, True]
    assert second["updates"][0]["summary"].startswith("Worker limit reached") and second["updates"][0]["diff"] is None
    assert second["updates"][1]["diff"]["create"] == ["w-1"] and second["next_before"] is None  # decisions are not updates
    ids = [u["id"] for u in first["updates"] + second["updates"]]
    assert ids == sorted(ids, reverse=True) and all(u["at"].endswith("Z") for u in first["updates"])
    assert fleet_api.get("/v1/fleet/history", params={"limit": 0}, headers=bearer(key)).status_code == 422


def test_preview_shows_the_plan_the_diff_and_its_price_and_changes_nothing(fleet_api, engine, make_execution):
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    records.request_workers(engine, 1, "local", "cx23", "fsn1", 2)  # asked for, no server yet
    for _ in range(5):
        make_execution(status="queued")

    def state():
        with engine.connect() as conn:
            return (conn.execute(select(Worker.id, Worker.state).order_by(Worker.id)).all(),
                    conn.execute(select(func.count()).select_from(FleetEvent)).scalar_one())

    before = state()
    view = fleet_api.get("/v1/fleet/preview", headers=bearer(key)).json()
    assert state() == before
    assert view["queued"] == 5 and view["provider"] == "local" and view["trigger"] == "provisioning"
    [action] = view["actions"]
    assert action["kind"] == "provision" and "5 queued against 0 free, 2 coming" in action["reason"]
    assert view["new_workers"] == ["w-2", "w-3"]  # the ids the next request would give
    assert view["desired"] == ["w-1", "w-2", "w-3"] and view["existing"] == []
    assert view["diff"] == {"create": ["w-1", "w-2", "w-3"], "delete": [], "replace": []}
    assert {s["worker_id"]: s["hourly_eur"] for s in view["servers"]} == {"w-1": 0.0064, "w-2": 0.0064, "w-3": 0.0064}
    cost = view["cost"]
    assert cost["hourly_eur"] == pytest.approx(3 * 0.0064) and cost["monthly_eur"] == pytest.approx(3 * 3.99)
    assert cost["prices_as_of"] == ["2026-04-15"] and cost["missing"] == []


def test_preview_names_a_server_type_without_a_price(db_url, engine, tmp_path):
    from fastapi.testclient import TestClient

    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    records.request_workers(engine, 1, "local", "local", "local", 2)
    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", local_grid_home=str(tmp_path)))
    with TestClient(app) as client:
        view = client.get("/v1/fleet/preview", headers=bearer(key)).json()
    assert view["servers"] == [{"worker_id": "w-1", "change": "create", "server_type": "local", "hourly_eur": None,
                                "monthly_eur": None}]
    [sentence] = view["cost"]["missing"]
    assert "no price for server type 'local' (w-1)" in sentence and view["cost"]["hourly_eur"] == 0


def test_a_control_plane_without_a_fleet_says_so(api, engine):
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    r = api.get("/v1/fleet/preview", headers=bearer(key))
    assert r.status_code == 501 and is_sentence(r.json()["detail"]) and "manages no fleet" in r.json()["detail"]


def test_retire_by_hand_drains_an_active_worker_and_gives_up_an_unbooted_one(fleet_api, engine):
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    records.request_workers(engine, 3, "local", "local", "local", 2)
    lifecycle.register_worker(engine, "w-1", "local", 2)
    lifecycle.declare_dead(engine, "w-3", "no heartbeat")
    r = fleet_api.post("/v1/workers/w-1/retire", headers=bearer(key))
    assert r.status_code == 200 and r.json()["state"] == "draining" and is_sentence(r.json()["message"])
    assert lifecycle.heartbeat(engine, "w-1")  # a draining worker keeps beating until it goes
    assert fleet_api.post("/v1/workers/w-2/retire", headers=bearer(key)).json()["state"] == "deleting"
    r = fleet_api.post("/v1/workers/w-3/retire", headers=bearer(key))
    assert r.status_code == 409 and "dead already" in r.json()["detail"]
    r = fleet_api.post("/v1/workers/w-404/retire", headers=bearer(key))
    assert r.status_code == 404 and is_sentence(r.json()["detail"])
    [w1] = [w for w in fleet_api.get("/v1/workers", headers=bearer(key)).json()["workers"] if w["id"] == "w-1"]
    assert w1["retire_requested_at"] and w1["state"] == "draining"
    # The plan deletes it now that it is idle, whatever its billing hour, under trigger `manual`.
    from rgrid_service.orchestrator.fleet import current_plan

    _, p = current_plan(engine, ServiceSettings(database_url="sqlite://"), "local")
    assert p.delete == ("w-1",) and p.trigger == "manual"


def test_admin_creates_operator_keys_and_the_local_grid_key_is_one(db_url, engine, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rgrid_service import admin, settings
    from rgrid_service.localgrid import bootstrap

    monkeypatch.setenv("RGRID_DATABASE_URL", db_url)
    settings.get_settings.cache_clear()
    try:
        for flags, scope in (([], "tenant"), (["--operator"], "operator")):
            done = CliRunner().invoke(admin.cli, ["create-key", "team", *flags])
            assert done.exit_code == 0, done.output
            assert auth.caller_for_key(engine, done.output.strip()).scope == scope
    finally:
        settings.get_settings.cache_clear()

    # A home whose key an older grid made with tenant scope: the next start upgrades it, same key.
    home = tmp_path / "home"
    (home / "local").mkdir(parents=True)
    old = auth.create_key(engine, "local", "local user")
    (home / "local" / "api-key").write_text(old)
    assert bootstrap.prepare_database(home, db_url) == old
    assert auth.caller_for_key(engine, old).scope == "operator"
    # A fresh home gets an operator key.
    fresh = tmp_path / "fresh"
    (fresh / "local").mkdir(parents=True)
    key = bootstrap.prepare_database(fresh, db_url)
    assert key != old and auth.caller_for_key(engine, key).scope == "operator"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ApiKey).where(ApiKey.scope == "operator")).scalar_one() == 3


def test_a_failing_provider_is_a_sentence_not_a_500(db_url, engine, tmp_path):
    """The engine or the cloud failing a preview reaches the operator in the fleet's own words,
    with a status the CLI does not retry for a minute."""
    from fastapi.testclient import TestClient

    class Unreachable:
        name = "local"

        def recover(self):
            pass

        def observe(self):
            raise ConnectionError("dial tcp 127.0.0.1:9: connect: connection refused")

        preview = apply = observe

    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    app = create_app(ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", local_grid_home=str(tmp_path)))
    app.state.fleet_provider = Unreachable()
    with TestClient(app) as client:
        r = client.get("/v1/fleet/preview", headers=bearer(key))
    assert r.status_code == 424, r.text
    assert r.json()["detail"].startswith("The fleet could not be previewed. Cannot reach cloud provider.")

"""The OpenAPI documents what every route can answer (errors.responses): 503 on every route, 401 on
every route behind an API key, 403 on every operator route, 422 wherever there is something to
validate, every refusal with the one error body. The contract test (tests/integration/
test_api_contract.py) then checks that the answers keep to it."""
from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from rgrid_service.api import deps
from rgrid_service.api.app import create_app
from rgrid_service.settings import ServiceSettings


def calls(dependant: Dependant) -> set:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= calls(sub)
    return found


def api_routes(routes) -> list[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI keeps those inside the router)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found += api_routes(route.original_router.routes)
    return found


def test_every_route_documents_the_statuses_it_can_answer(tmp_path):
    app = create_app(ServiceSettings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'r.db'}"))
    spec = app.openapi()
    routes = api_routes(app.routes)
    assert len(routes) >= 18
    kinds = {"keyed": 0, "operator": 0}
    for route in routes:
        used = calls(route.dependant)
        kinds["keyed"] += deps.get_caller in used
        kinds["operator"] += deps.get_operator in used
        for method in route.methods:
            documented = spec["paths"][route.path_format][method.lower()]["responses"]
            where = f"{method} {route.path}"
            assert "503" in documented, where
            if deps.get_caller in used:
                assert "401" in documented, where
            if deps.get_operator in used:
                assert "403" in documented, where
            if route.dependant.path_params or route.dependant.query_params or route.body_field:
                assert "422" in documented, where
            for status, answer in documented.items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, \
                        (where, status)
    assert kinds["keyed"] >= 16 and kinds["operator"] >= 7, kinds


def test_a_body_that_cannot_be_read_is_a_422_with_a_sentence(tmp_path):
    from fastapi.testclient import TestClient

    app = create_app(ServiceSettings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'r.db'}"))
    with TestClient(app) as client:
        for body in (b"\xff\xfe{", b"{not json"):
            r = client.post("/v1/executions", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "JSON" in detail and detail.endswith("."), detail

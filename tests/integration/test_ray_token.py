"""Ray's token authentication on the real local grid: no driver joins the cluster without the
grid's token, and the dashboard's API refuses calls without it. (That the grid, every process of
which runs in token mode, still runs jobs is what every other grid test shows.)"""
from __future__ import annotations

import httpx
import pytest

from rgrid_service.localgrid.layout import ray_token_file
from tests.raydriver import try_driver

pytestmark = pytest.mark.grid


# What Ray 2.60 does: the GCS answers every call without the right token with UNAUTHENTICATED,
# ray.init retries for about 20 s logging it, then raises ConnectionError.
REFUSED_BY_GCS = "Unauthenticated: RPC error: InvalidAuthToken"


@pytest.mark.parametrize("auth", [{}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}],
                         ids=["no token", "a wrong token"])
def test_a_driver_without_the_token_cannot_join_the_grid(grid, tmp_path, auth):
    kind, said, stderr = try_driver(grid.state.ray_address, tmp_path, auth)
    assert kind == "REFUSED" and said[0] == "ConnectionError", said
    assert REFUSED_BY_GCS in stderr, stderr[-2000:]


def test_a_driver_with_the_token_joins_and_sees_every_worker(grid, tmp_path):
    kind, nodes, _ = try_driver(grid.state.ray_address, tmp_path,
                             {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_token_file(grid.home))})
    assert kind == "NODES", nodes
    assert {n["worker"] for n in nodes if n["alive"]} >= {"w-1", "w-2", "w-3"}


def test_the_dashboard_api_wants_the_token(dashboard_grid):
    grid = dashboard_grid
    token = ray_token_file(grid.home).read_text().strip()
    url = f"{grid.state.dashboard_url}/api/version"
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer " + "0" * 64}).status_code == 403
        assert http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.get(f"{grid.state.dashboard_url}/api/jobs/").status_code == 401  # no job submission

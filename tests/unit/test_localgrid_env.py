"""A local grid's component restarted from another shell runs with the settings the grid started
with (timings, limits), never with the credentials of the shell that started it."""
from __future__ import annotations

from rgrid_core.localstate import GridState, load_state
from rgrid_service.localgrid.grid import service_env, started_settings


def test_started_settings_keep_rgrid_and_ray_settings_but_no_credentials():
    kept = started_settings({
        "RGRID_MULTIPART_THRESHOLD_BYTES": "8388608", "RAY_USAGE_STATS_ENABLED": "0",
        "RGRID_DATABASE_URL": "postgresql://u:p@h/db", "RGRID_API_KEY": "rg_x", "RGRID_SECRET_KEY": "s",
        "RGRID_HCLOUD_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "a", "HOME": "/root",
    })
    assert kept == {"RGRID_MULTIPART_THRESHOLD_BYTES": "8388608", "RAY_USAGE_STATS_ENABLED": "0"}


def test_a_restart_from_a_shell_without_the_settings_still_has_them(tmp_path, monkeypatch):
    state = GridState(home=str(tmp_path), api_url="http://127.0.0.1:1", api_key="", ray_address="127.0.0.1:2",
                      dashboard_url="http://127.0.0.1:3", s3_endpoint="127.0.0.1:4",
                      database_url="sqlite:///x.db",
                      started_env={"RGRID_MULTIPART_THRESHOLD_BYTES": "8388608", "RGRID_S3_ENDPOINT": "elsewhere"})
    state.save()
    monkeypatch.delenv("RGRID_MULTIPART_THRESHOLD_BYTES", raising=False)
    env = service_env(load_state(tmp_path), ("ak", "sk"))
    assert env["RGRID_MULTIPART_THRESHOLD_BYTES"] == "8388608"
    assert env["RGRID_S3_ENDPOINT"] == "127.0.0.1:4"  # the grid's own addresses win

"""Every Ray node the grid starts leaves out what the grid does not use (issue #13): no log monitor
anywhere, no dashboard and module-less dashboard agents unless RGRID_RAY_DASHBOARD asks for them,
and Ray's periodic work the grid does not need off or slower, each overridable by its RAY_* name."""
from __future__ import annotations

from pathlib import Path

from rgrid_core.localstate import GridState
from rgrid_runner.node import ray_node_command
from rgrid_service.fleet.launch import worker_launch
from rgrid_service.localgrid.grid import service_env
from rgrid_service.localgrid.rayhead import head_command
from rgrid_service.raynet import LEAN_RAY_SETTINGS, NO_DASHBOARD, ray_process_env
from rgrid_service.settings import ServiceSettings


def test_ray_processes_get_the_lean_settings_and_a_set_value_wins():
    env = ray_process_env({"RGRID_RAY_TOKEN_FILE": "/x/t", "RAY_memory_monitor_refresh_ms": "250"})
    assert env["RAY_enable_metrics_collection"] == "0"
    assert env["RAY_task_events_report_interval_ms"] == "0"
    assert env["RAY_memory_monitor_refresh_ms"] == "250"  # the operator's value, not ours
    assert all(env[name] for name in LEAN_RAY_SETTINGS)


def _flag_value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_the_head_without_a_dashboard_port_starts_no_dashboard_and_no_log_monitor(tmp_path):
    lean = head_command(tmp_path, 6379, None)
    assert NO_DASHBOARD in lean and "--dashboard-port" not in lean
    assert _flag_value(lean, "--include-log-monitor") == "false"
    full = head_command(tmp_path, 6379, 8265)
    assert NO_DASHBOARD not in full and _flag_value(full, "--dashboard-port") == "8265"
    assert _flag_value(full, "--include-log-monitor") == "false"


def test_a_worker_node_runs_a_lean_agent_unless_the_cluster_has_a_dashboard():
    lean = ray_node_command("w-1", "10.0.0.2:6379", 2, "10.0.0.3")
    assert NO_DASHBOARD in lean and _flag_value(lean, "--include-log-monitor") == "false"
    assert NO_DASHBOARD not in ray_node_command("w-1", "10.0.0.2:6379", 2, "10.0.0.3", dashboard=True)


def test_workers_are_launched_knowing_whether_the_cluster_has_a_dashboard():
    settings = ServiceSettings(_env_file=None, worker_api_url="http://10.0.0.2:8000", secret_key="k" * 32)
    assert worker_launch("w-1", settings).env["RGRID_RAY_DASHBOARD"] == "false"
    on = settings.model_copy(update={"ray_dashboard": True})
    assert worker_launch("w-1", on).env["RGRID_RAY_DASHBOARD"] == "true"


def test_a_grid_without_a_dashboard_reports_none(tmp_path, monkeypatch):
    monkeypatch.setenv("RGRID_RAY_DASHBOARD_URL", "http://somebody-elses:8265")
    state = GridState(home=str(tmp_path), api_url="http://127.0.0.1:1", api_key="", ray_address="127.0.0.1:2",
                      dashboard_url="", s3_endpoint="127.0.0.1:4", database_url="sqlite:///x.db")
    assert "RGRID_RAY_DASHBOARD_URL" not in service_env(state, ("ak", "sk"))
    state.dashboard_url = "http://127.0.0.1:3"
    assert service_env(state, ("ak", "sk"))["RGRID_RAY_DASHBOARD_URL"] == "http://127.0.0.1:3"


def _unit_environment(unit: str) -> dict[str, str]:
    """The Environment= settings of one systemd unit in the control plane's cloud-init."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "cloud-init" / "control_plane.yaml").read_text())
    content = next(f["content"] for f in doc["write_files"] if f["path"] == f"/etc/systemd/system/{unit}")
    env = {}
    for line in content.splitlines():
        if line.startswith("Environment="):
            env.update(item.split("=", 1) for item in line[len("Environment="):].split())
    return env


def test_the_control_planes_ray_head_and_driver_run_lean_too():
    for unit in ("rgrid-ray-head.service", "rgrid-orchestrator.service"):
        env = _unit_environment(unit)
        assert {k: env.get(k) for k in LEAN_RAY_SETTINGS} == LEAN_RAY_SETTINGS, unit

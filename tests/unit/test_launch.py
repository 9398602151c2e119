"""One worker command and environment: the process fleet spawns exactly what cloud-init starts."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from rgrid_service.fleet.launch import (DOCKER_CONFIG, ENV_FILE, UNIT_FILE, WorkerLaunch, launch_from_cloud_init,
                                        launch_problem, render_cloud_init, worker_launch)
from rgrid_service.secrets import MissingSecretKey, keys_for
from rgrid_service.settings import ServiceSettings
from tests.conftest import missing

SETTINGS = ServiceSettings(_env_file=None, database_url="postgresql://rgrid:pw@10.0.0.2/rgrid",
                           s3_endpoint="10.0.0.2:8333", ray_address="10.0.0.2:6379", heartbeat_interval_seconds=7,
                           sandbox_niceness=5, secret_key="k" * 32, worker_api_url="http://10.0.0.2:8000")


def test_cloud_init_starts_the_same_command_with_the_same_environment():
    launch = worker_launch("w-7", SETTINGS)
    assert launch_from_cloud_init(render_cloud_init(launch)) == launch
    assert launch.env["RGRID_WORKER_ID"] == "w-7"
    assert launch.env["RGRID_HEARTBEAT_INTERVAL_SECONDS"] == "7.0"
    assert launch.env["RGRID_SANDBOX_NICENESS"] == "5"
    assert "RGRID_LOCAL_GRID_HOME" not in launch.env and "RGRID_MAX_WORKERS" not in launch.env


def test_a_worker_gets_the_ray_token_in_its_launch_environment(tmp_path):
    (tmp_path / "ray-token").write_text("abc123\n")
    settings = SETTINGS.model_copy(update={"ray_token_file": str(tmp_path / "ray-token")})
    assert worker_launch("w-1", settings).env["RGRID_RAY_AUTH_TOKEN"] == "abc123"
    assert "RGRID_RAY_TOKEN_FILE" not in worker_launch("w-1", settings).env


def test_user_data_depends_on_the_worker_alone_and_is_deterministic():
    one, again, other = (render_cloud_init(worker_launch(w, SETTINGS)) for w in ("w-1", "w-1", "w-2"))
    assert one == again
    changed = [(a.strip(), b.strip()) for a, b in zip(one.splitlines(), other.splitlines()) if a != b]
    token = {w: keys_for(SETTINGS).worker_token(w) for w in ("w-1", "w-2")}
    assert changed == [("RGRID_WORKER_ID=w-1", "RGRID_WORKER_ID=w-2"),
                       (f"RGRID_WORKER_TOKEN={token['w-1']}", f"RGRID_WORKER_TOKEN={token['w-2']}")]


def test_user_data_shape():
    doc = yaml.safe_load(render_cloud_init(worker_launch("w-1", SETTINGS)))
    files = {f["path"]: f for f in doc["write_files"]}
    assert files[ENV_FILE]["permissions"] == "0600"
    assert "ExecStart=/opt/rgrid/venv/bin/python3 -m rgrid_runner.node" in files[UNIT_FILE]["content"]
    assert ["systemctl", "enable", "--now", "rgrid-worker.service"] in doc["runcmd"]


def test_a_value_that_cannot_go_into_an_environment_file_is_refused():
    with pytest.raises(ValueError, match="newline"):
        render_cloud_init(worker_launch("w-1", SETTINGS.model_copy(update={"work_root": "/tmp/a\nb"})))


def test_no_worker_starts_without_the_secret_key_or_the_api_url():
    for missing_one in ({"secret_key": None}, {"worker_api_url": None}):
        settings = SETTINGS.model_copy(update=missing_one)
        assert "RGRID_" in launch_problem(settings)
        with pytest.raises((ValueError, MissingSecretKey), match="is not set"):
            worker_launch("w-1", settings)
    assert launch_problem(SETTINGS) is None


def test_the_worker_gets_its_token_and_the_api_url_but_never_the_secret_key():
    env = worker_launch("w-1", SETTINGS).env
    assert keys_for(SETTINGS).token_worker(env["RGRID_WORKER_TOKEN"]) == "w-1"
    assert env["RGRID_API_URL"] == "http://10.0.0.2:8000"
    assert not any("k" * 32 in v for v in env.values()) and "RGRID_SECRET_KEY" not in env


def docker_launch() -> WorkerLaunch:
    launch = worker_launch("w-1", SETTINGS)
    return WorkerLaunch(launch.argv, {**launch.env, "RGRID_DOCKER_HOST": "unix:///run/docker.sock",
                                      "RGRID_IMAGE_REGISTRY": "10.0.0.2:5000"})


@pytest.mark.parametrize("docker", [False, True])
def test_rendered_cloud_init_passes_the_cloud_init_schema(tmp_path, docker):
    if not shutil.which("cloud-init"):
        missing("cloud-init", "install it with `apt-get install cloud-init` (make test does).")
    path = tmp_path / "user-data.yaml"
    path.write_text(render_cloud_init(docker_launch() if docker else worker_launch("w-1", SETTINGS)))
    done = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid" in done.stdout + done.stderr


def test_a_docker_worker_server_starts_its_engine_before_the_worker_and_may_pull_from_the_registry():
    """The engine comes from Debian's docker.io, allowed to pull from the control plane's registry
    (plain HTTP on the private network), and starts before the worker, which pulls every runtime
    image before its first heartbeat; the worker's unit needs the engine."""
    import json

    launch = docker_launch()
    doc = yaml.safe_load(render_cloud_init(launch))
    assert "docker.io" in doc["packages"]
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    engine = json.loads(files[DOCKER_CONFIG])
    assert engine["insecure-registries"] == ["10.0.0.2:5000"]
    assert (engine["bridge"], engine["iptables"]) == ("none", False)
    runcmd = doc["runcmd"]
    assert runcmd.index(["systemctl", "enable", "--now", "docker.service"]) < runcmd.index(
        ["systemctl", "enable", "--now", "rgrid-worker.service"])
    unit = files[UNIT_FILE].splitlines()
    assert "Requires=docker.service" in unit and "After=network-online.target docker.service" in unit
    assert launch_from_cloud_init(render_cloud_init(launch)) == launch  # the same command and environment


def test_a_worker_server_without_docker_has_no_engine():
    doc = yaml.safe_load(render_cloud_init(worker_launch("w-1", SETTINGS)))
    assert "docker.io" not in doc["packages"] and "bubblewrap" in doc["packages"]
    assert DOCKER_CONFIG not in {f["path"] for f in doc["write_files"]}
    assert not any("docker.service" in cmd for cmd in doc["runcmd"])
    assert "docker" not in {f["path"]: f["content"] for f in doc["write_files"]}[UNIT_FILE]


def test_a_worker_is_launched_with_no_database_url_no_store_keys_and_no_control_plane_secret():
    """A worker runs strangers' scripts: it holds only its own token (the worker API) and gets
    files through presigned URLs, so neither its environment file nor its unit names anything else."""
    settings = SETTINGS.model_copy(update=dict(database_url="postgresql://rgrid:db-password@10.0.0.2/rgrid",
                                               s3_access_key="s3-access", s3_secret_key="s3-secret"))
    launch = worker_launch("w-1", settings)
    user_data = render_cloud_init(launch)
    for env in (launch.env, launch_from_cloud_init(user_data).env):
        assert not [k for k in env if "DATABASE" in k or k.startswith("RGRID_S3_") or "SECRET" in k]
        assert sorted(k for k in env if "TOKEN" in k or "KEY" in k) == ["RGRID_WORKER_TOKEN"]  # its own only
    for secret in ("db-password", "postgresql://", "s3-access", "s3-secret", "k" * 32):
        assert secret not in user_data


def test_the_process_fleet_passes_a_worker_none_of_the_control_planes_settings_or_credentials(tmp_path, monkeypatch):
    """The process fleet spawns workers from the orchestrator, whose environment holds the database
    URL, the store keys and the secret key: none of it reaches the worker's process group."""
    from rgrid_service.fleet import process

    for name, value in {"RGRID_DATABASE_URL": "postgresql://rgrid:db-password@127.0.0.1/rgrid",
                        "RGRID_S3_ACCESS_KEY": "s3-access", "RGRID_S3_SECRET_KEY": "s3-secret",
                        "RGRID_SECRET_KEY": "control-plane-secret", "RGRID_HCLOUD_TOKEN": "hcloud-token",
                        "RGRID_API_KEY": "rg_operator", "RGRID_NODE_IP": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    spawned = []
    monkeypatch.setattr(process, "spawn", lambda argv, log, env: spawned.append(env) or 1)
    monkeypatch.setattr(process, "wait_for_log", lambda *a, **k: None)
    fleet = process.ProcessFleet(tmp_path, SETTINGS, slots=2)
    fleet._start("w-1")
    env = spawned[0]
    assert env["RGRID_WORKER_ID"] == "w-1" and env["RGRID_NODE_IP"] == "127.0.0.1"
    assert not [k for k in env if "DATABASE" in k or k.startswith("RGRID_S3_") or "SECRET" in k
                or k in ("RGRID_HCLOUD_TOKEN", "RGRID_API_KEY")]
    for secret in ("db-password", "s3-access", "s3-secret", "control-plane-secret", "hcloud-token", "rg_operator"):
        assert not [k for k, v in env.items() if secret in v], secret

"""The root Pulumi project (the control plane) with the real CLI, the hcloud plugin and the
project's Python language plugin, against the local Hetzner API started here on 127.0.0.1.

The project is used from a copy of Pulumi.yaml in a temporary folder (its `stacks` a link to the
repository's), because `pulumi stack init` writes Pulumi.<stack>.yaml beside Pulumi.yaml: the
test never writes into the repository. The backend, PULUMI_HOME and the stand-in's state are
temporary too. Secrets come from scripts/control-plane-init.sh, like an operator's.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stacks.control_plane import ANYWHERE
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "scripts" / "pulumi-engine.sh"
INIT = ROOT / "scripts" / "control-plane-init.sh"
STACK = "cp-test"
SECRET_KEYS = ("hcloud:token", "databasePassword", "s3AccessKey", "s3SecretKey", "secretKey", "apiKey",
               "rayToken")


def engine_dir() -> Path:
    done = subprocess.run([str(ENGINE), "ensure"], capture_output=True, text=True)
    if done.returncode != 0:
        missing("the Pulumi engine", (done.stderr.strip().splitlines() or ["scripts/pulumi-engine.sh failed"])[-1])
    path = Path(done.stdout.strip().splitlines()[-1])
    if not (path / "pulumi-language-python").exists():
        pytest.fail(f"scripts/pulumi-engine.sh ensure installed no pulumi-language-python beside {path}/pulumi")
    return path


class Deployment:
    """A temporary copy of the root project, its backend, and the local Hetzner API."""

    def __init__(self, tmp: Path, bin_dir: Path):
        self.tmp, self.bin_dir = tmp, bin_dir
        self.project = tmp / "project"
        self.project.mkdir()
        shutil.copy(ROOT / "Pulumi.yaml", self.project / "Pulumi.yaml")
        (self.project / "stacks").symlink_to(ROOT / "stacks")
        self.backend = tmp / "backend"
        self.backend.mkdir()
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_HOME": str(tmp / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(16),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_PYTHON_CMD": sys.executable,
            "PYTHONPATH": str(ROOT),
            "HCLOUD_TOKEN": secrets.token_hex(32),
            "PULUMI": str(bin_dir / "pulumi"),
            "NO_COLOR": "1",
        }
        self.cloud_proc = None
        self.cloud_url = ""

    def start_cloud(self) -> None:
        state = self.tmp / "cloud"
        self.cloud_proc = subprocess.Popen(
            [sys.executable, "-m", "rgrid_service.localgrid.hetzner", "--port", "0", "--state-dir", str(state),
             "--boot-delay", "0.2"], env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "cloud.log", "wb"), start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (state / "endpoint.json").exists():
            assert self.cloud_proc.poll() is None, (self.tmp / "cloud.log").read_text()
            time.sleep(0.1)
        self.cloud_url = json.loads((state / "endpoint.json").read_text())["url"]

    def stop_cloud(self) -> None:
        if self.cloud_proc and self.cloud_proc.poll() is None:
            os.killpg(self.cloud_proc.pid, signal.SIGTERM)
            self.cloud_proc.wait(timeout=20)

    def pulumi(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        done = subprocess.run([str(self.bin_dir / "pulumi"), *args, "--cwd", str(self.project), "--stack", STACK,
                               "--non-interactive"], env=self.env, capture_output=True, text=True, input=stdin,
                              timeout=600)
        out = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({done.returncode}):\n{out[-8000:]}")
        return out

    def cloud(self, kind: str) -> list[dict]:
        with httpx.Client(base_url=self.cloud_url, headers={"Authorization": f"Bearer {self.env['HCLOUD_TOKEN']}"},
                          timeout=30) as api:
            return api.get(f"/{kind}", params={"per_page": 50}).json()[kind]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    bin_dir = engine_dir()
    dep = Deployment(tmp_path_factory.mktemp("cp"), bin_dir)
    dep.start_cloud()
    subprocess.run([str(ENGINE), "install-plugin", dep.env["PULUMI_HOME"]], env=dep.env, check=True,
                   capture_output=True)
    try:
        yield dep
    finally:
        dep.stop_cloud()


def test_init_preview_up_secrets_destroy(deployment: Deployment):
    dep = deployment
    done = subprocess.run([str(INIT), STACK, "--cwd", str(dep.project)], env=dep.env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (ROOT / f"Pulumi.{STACK}.yaml").exists()
    assert (dep.project / f"Pulumi.{STACK}.yaml").exists()
    for key, value in (("hcloud:endpoint", dep.cloud_url), ("hcloud:pollInterval", "100ms"),
                       ("repository", "https://git.example.org/rgrid.git")):
        dep.pulumi("config", "set", key, value)
    values = {key: dep.pulumi("config", "get", key).strip() for key in SECRET_KEYS}
    assert values["hcloud:token"] == dep.env["HCLOUD_TOKEN"] and values["apiKey"].startswith("rg_")
    assert all(len(v) >= 32 for v in values.values()), "every secret is set"
    config_text = (dep.project / f"Pulumi.{STACK}.yaml").read_text()
    leaks = [k for k, v in values.items() if v in config_text]
    assert not leaks, f"in the clear in the stack's config file: {leaks}"
    assert init_output_clean(done.stdout + done.stderr, values)

    preview = dep.pulumi("preview", "--diff")
    assert "9 to create" in preview, preview[-3000:]
    for typ in ("hcloud:index/network:Network", "hcloud:index/networkSubnet:NetworkSubnet",
                "hcloud:index/server:Server", "hcloud:index/volume:Volume",
                "hcloud:index/volumeAttachment:VolumeAttachment", "hcloud:index/firewall:Firewall"):
        assert typ in preview, typ
    assert dep.cloud("servers") == [] and dep.cloud("volumes") == [], "preview created something"

    up = dep.pulumi("up", "--yes", "--diff")
    assert "9 created" in up, up[-3000:]  # the stack, the provider and seven resources

    # The cloud now holds exactly the control plane.
    networks, servers, firewalls, volumes = (dep.cloud(k) for k in ("networks", "servers", "firewalls", "volumes"))
    assert len(networks) == 1 and [s["ip_range"] for s in networks[0]["subnets"]] == ["10.10.0.0/17"]
    assert networks[0]["ip_range"] == "10.10.0.0/16"
    assert len(servers) == 1
    server = servers[0]
    assert (server["name"], server["server_type"]["name"], server["location"]["name"]) == (
        "rgrid-control-plane", "cx33", "fsn1")
    assert [(p["network"], p["ip"]) for p in server["private_net"]] == [(networks[0]["id"], "10.10.0.2")]
    assert sorted(f["name"] for f in firewalls) == ["rgrid-control-plane", "rgrid-workers"]
    cp_fw = next(f for f in firewalls if f["name"] == "rgrid-control-plane")
    assert [r["server"]["id"] for r in cp_fw["applied_to"]] == [server["id"]]
    public = [r for r in cp_fw["rules"] if set(r["source_ips"]) & set(ANYWHERE)]
    assert [(r["protocol"], r["port"]) for r in public] == [("tcp", "8000")]
    assert all(r["source_ips"] == ["10.10.0.0/16"] for r in cp_fw["rules"] if r not in public)
    assert len(volumes) == 1 and volumes[0]["server"] == server["id"] and volumes[0]["format"] == "ext4"
    assert server["volumes"] == [volumes[0]["id"]]

    outputs = json.loads(dep.pulumi("stack", "output", "--json"))
    assert outputs["api_key"] == "[secret]"
    assert outputs["network_id"] == networks[0]["id"]
    assert outputs["worker_firewall_id"] == next(f["id"] for f in firewalls if f["name"] == "rgrid-workers")
    assert outputs["head_address"] == "10.10.0.2:6379" and outputs["subnet"] == "10.10.0.0/17"
    assert outputs["api_url"] == f"http://{server['public_net']['ipv4']['ip']}:8000"
    shown = json.loads(dep.pulumi("stack", "output", "--json", "--show-secrets"))
    assert shown["api_key"] == values["apiKey"]

    # No secret in the clear: the state files, `pulumi stack export`, the preview and up output.
    exported = dep.pulumi("stack", "export")
    state_files = {str(p.relative_to(dep.backend)): p.read_text(errors="replace")
                   for p in dep.backend.rglob("*") if p.is_file()}
    assert any(name.endswith(f"{STACK}.json") for name in state_files)
    for key, value in values.items():
        for where, text in {"preview": preview, "up": up, "stack export": exported, **state_files}.items():
            assert value not in text, f"{key} in the clear in {where}"
    assert "ciphertext" in exported  # the user_data and token are there, encrypted

    # Teardown leaves nothing.
    destroy = dep.pulumi("destroy", "--yes")
    assert "9 deleted" in destroy, destroy[-3000:]
    for key, value in values.items():
        assert value not in destroy, f"{key} in the clear in destroy's output"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dep.cloud("servers"):
        time.sleep(0.2)
    assert {k: dep.cloud(k) for k in ("servers", "networks", "firewalls", "volumes")} == {
        "servers": [], "networks": [], "firewalls": [], "volumes": []}


def init_output_clean(output: str, values: dict[str, str]) -> bool:
    leaked = [k for k, v in values.items() if v in output]
    assert not leaked, f"control-plane-init.sh printed {leaked}"
    return True

"""The local grid's cloud for `--fleet pulumi`: the Pulumi engine with the hcloud plugin, and a
Hetzner API on 127.0.0.1 whose servers boot local workers from their user_data.

Only this starter knows the cloud is local: the orchestrator gets a Hetzner endpoint and token like
any other, and the worker_pool stack reaches it through the provider's `endpoint`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rgrid_core.retry import retrying

from .layout import local_dir, logs_dir
from .procs import alive, spawn

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "pulumi-engine.sh"


def cloud_dir(home: Path) -> Path:
    return local_dir(home) / "cloud"


def pulumi_dir(home: Path) -> Path:
    return local_dir(home) / "pulumi"


def ensure_engine(home: Path) -> Path:
    """The folder holding `pulumi` (built once into the tools cache if there is none), with the
    hcloud plugin installed into the grid's private PULUMI_HOME."""
    try:
        done = subprocess.run([str(ENGINE_SCRIPT), "ensure"], capture_output=True, text=True, check=True)
        bin_dir = Path(done.stdout.strip().splitlines()[-1])
        subprocess.run([str(ENGINE_SCRIPT), "install-plugin", str(pulumi_dir(home) / "home")],
                       capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()
        raise RuntimeError(f"The Pulumi engine is not available: {last[-1] if last else e}") from e
    return bin_dir


def token(home: Path) -> str:
    """The cloud API token of this grid (64 characters, as Hetzner's), made once, mode 0600."""
    path = cloud_dir(home) / "token"
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def start_cloud(home: Path, boot_delay: float = 1.0, max_servers: int | None = None) -> tuple[int, str]:
    """Start the local Hetzner API; returns (pid, its /v1 URL)."""
    state = cloud_dir(home)
    state.mkdir(parents=True, exist_ok=True)
    endpoint = state / "endpoint.json"
    endpoint.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "rgrid_service.localgrid.hetzner", "--port", "0", "--state-dir", str(state),
           "--boot-delay", str(boot_delay), "--kill-servers-on-exit"]
    if max_servers:
        cmd += ["--max-servers", str(max_servers)]
    pid = spawn(cmd, logs_dir(home) / "cloud.log")

    def read_endpoint() -> str:
        if not alive(pid):
            raise RuntimeError(f"The local cloud API exited during start-up; see {logs_dir(home) / 'cloud.log'}.")
        return json.loads(endpoint.read_text())["url"]

    url = retrying(read_endpoint, seconds=30, when=lambda e: not isinstance(e, RuntimeError), first_wait=0.1)
    return pid, url


def fleet_env(home: Path, bin_dir: Path, url: str) -> dict[str, str]:
    return {
        "RGRID_FLEET": "pulumi",
        "RGRID_PULUMI_BIN_DIR": str(bin_dir),
        "RGRID_PULUMI_STATE_DIR": str(pulumi_dir(home)),
        "RGRID_HCLOUD_TOKEN": token(home),
        "RGRID_HCLOUD_ENDPOINT": url,
    }

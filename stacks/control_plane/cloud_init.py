"""The control-plane server's user_data: cloud-init/control_plane.yaml with its five files filled in.

Pure: the same values render the same bytes. The values hold secrets, so the stack wraps the
result in a secret Output; nothing here logs or prints them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rgrid_service.fleet.launch import dump_cloud_config, env_file
from rgrid_service.localgrid.seaweed import s3_identities

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud-init" / "control_plane.yaml"
SERVICE_ENV = "/etc/rgrid/control-plane.env"
SETUP_ENV = "/etc/rgrid/setup.env"
SECRET_ENV = "/etc/rgrid/control-plane-secret.env"  # read by the API's and the orchestrator's units only
S3_IDENTITIES = "/etc/rgrid/s3-identities.json"
RAY_TOKEN = "/etc/rgrid/ray-token"  # the Ray cluster's token (RAY_AUTH_TOKEN_PATH of the head and the orchestrator)
# Secrets go into SQL and environment files unquoted: only URL-safe characters (what
# scripts/control-plane-init.sh generates), and long enough to be worth the name.
_SECRET = re.compile(r"[A-Za-z0-9_-]+")
# The control plane's secret key derives every worker token: as long as the API requires.
MIN_LENGTH = {"secretKey": 32}


@dataclass(frozen=True)
class ControlPlaneInit:
    service_env: dict[str, str]  # the API's, orchestrator's, store's and head's RGRID_* settings
    setup_env: dict[str, str] = field(repr=False)  # what only the set-up script reads
    secret_env: dict[str, str] = field(repr=False, default_factory=dict)  # RGRID_SECRET_KEY
    s3_access_key: str = field(repr=False, default="")
    s3_secret_key: str = field(repr=False, default="")
    ray_token: str = field(repr=False, default="")


def check_secret(name: str, value: str) -> str:
    least = MIN_LENGTH.get(name, 16)
    if not _SECRET.fullmatch(value or "") or len(value) < least:
        raise ValueError(f"The secret {name} must be at least {least} characters of A-Z, a-z, 0-9, '_' or '-'. "
                         "Set it again with scripts/control-plane-init.sh or `pulumi config set --secret`.")
    return value


def render(init: ControlPlaneInit) -> str:
    doc = yaml.safe_load(TEMPLATE.read_text())
    files = {f["path"]: f for f in doc["write_files"]}
    files[SERVICE_ENV]["content"] = env_file(init.service_env)
    files[SETUP_ENV]["content"] = env_file(init.setup_env)
    files[SECRET_ENV]["content"] = env_file(init.secret_env)
    files[S3_IDENTITIES]["content"] = s3_identities(init.s3_access_key, init.s3_secret_key)
    files[RAY_TOKEN]["content"] = init.ray_token
    return dump_cloud_config(doc)


def files_of(user_data: str) -> dict[str, str]:
    """path -> content of a rendered user_data's files (for tests and for reading it back)."""
    return {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}

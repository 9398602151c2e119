"""The control-plane server's user_data: cloud-init/control_plane.yaml with its three files filled in.

Pure: the same values render the same bytes. The values hold secrets, so the stack wraps the
result in a secret Output; nothing here logs or prints them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rgrid_service.fleet.launch import env_file

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud-init" / "control_plane.yaml"
SERVICE_ENV = "/etc/rgrid/control-plane.env"
SETUP_ENV = "/etc/rgrid/setup.env"
S3_IDENTITIES = "/etc/rgrid/s3-identities.json"
# Secrets go into SQL and environment files unquoted: only URL-safe characters (what
# scripts/control-plane-init.sh generates), and long enough to be worth the name.
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class ControlPlaneInit:
    service_env: dict[str, str]  # the API's, orchestrator's, store's and head's RGRID_* settings
    setup_env: dict[str, str] = field(repr=False)  # what only the set-up script reads
    s3_access_key: str = field(repr=False, default="")
    s3_secret_key: str = field(repr=False, default="")


def check_secret(name: str, value: str) -> str:
    if not _SECRET.fullmatch(value or ""):
        raise ValueError(f"The secret {name} must be at least 16 characters of A-Z, a-z, 0-9, '_' or '-'. "
                         "Set it again with scripts/control-plane-init.sh or `pulumi config set --secret`.")
    return value


def s3_identities(access_key: str, secret_key: str) -> str:
    return json.dumps({"identities": [{
        "name": "rgrid", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, indent=1) + "\n"


def render(init: ControlPlaneInit) -> str:
    doc = yaml.safe_load(TEMPLATE.read_text())
    files = {f["path"]: f for f in doc["write_files"]}
    files[SERVICE_ENV]["content"] = env_file(init.service_env)
    files[SETUP_ENV]["content"] = env_file(init.setup_env)
    files[S3_IDENTITIES]["content"] = s3_identities(init.s3_access_key, init.s3_secret_key)
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1000)


def files_of(user_data: str) -> dict[str, str]:
    """path -> content of a rendered user_data's files (for tests and for reading it back)."""
    return {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, units, env files) as literal blocks, so user_data reads like the files."""


_BlockDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))

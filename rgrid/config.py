"""Where the CLI sends requests: a remote control plane if configured, else the local grid."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Endpoint:
    api_url: str
    api_key: str
    local: bool


def rgrid_home() -> Path:
    return Path(os.environ.get("RGRID_HOME") or Path.home() / ".rgrid")


def remote_endpoint() -> Endpoint | None:
    """RGRID_API_URL + RGRID_API_KEY, else ~/.rgrid/config.json {"api_url", "api_key"}."""
    url, key = os.environ.get("RGRID_API_URL"), os.environ.get("RGRID_API_KEY")
    if not url:
        cfg = rgrid_home() / "config.json"
        if cfg.exists():
            data = json.loads(cfg.read_text())
            url, key = data.get("api_url"), key or data.get("api_key")
    if url:
        return Endpoint(url.rstrip("/"), key or "", local=False)
    return None

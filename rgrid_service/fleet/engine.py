"""The Pulumi engine's settings, in one place: where the CLI is, a file backend and a private
PULUMI_HOME under the fleet's state folder, the passphrase in a file, no update checks, no plugin
downloads (a missing plugin fails at once instead of reaching for the network)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

@dataclass(frozen=True)
class Engine:
    bin_dir: Path  # holds the `pulumi` CLI
    state_dir: Path  # backend, PULUMI_HOME and passphrase live below it

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def backend(self) -> Path:
        return self.state_dir / "backend"

    @property
    def passphrase_file(self) -> Path:
        path = self.state_dir / "passphrase"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path

    def env(self) -> dict[str, str]:
        self.backend.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        return {
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_HOME": str(self.home),
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.passphrase_file),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
        }

    def command(self):
        from pulumi import automation as auto

        return auto.PulumiCommand(root=str(self.bin_dir.parent), version=None)

    def locks(self) -> Path:
        return self.backend / ".pulumi" / "locks"

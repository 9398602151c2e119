"""What a process-fleet worker inherits from the control plane's environment: nothing that looks
like a credential, whatever its prefix (rgrid_service.fleet.process.worker_environ)."""
from __future__ import annotations

from rgrid_service.fleet.process import worker_environ

DROPPED = {
    "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t", "AWS_PROFILE": "p",
    "DATABASE_URL": "postgresql://u:p@h/db", "PGPASSWORD": "pw", "PGHOST": "db", "PULUMI_ACCESS_TOKEN": "pul",
    "PULUMI_CONFIG_PASSPHRASE": "pp", "HCLOUD_TOKEN": "hc", "GITHUB_TOKEN": "gh", "MY_API_KEY": "k",
    "SOME_SECRET": "x", "SMTP_PASSWORD": "x", "RGRID_SECRET_KEY": "x", "RGRID_DATABASE_URL": "x",
    "RGRID_S3_SECRET_KEY": "x", "RGRID_HEARTBEAT_INTERVAL_SECONDS": "5",
}
KEPT = {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "RAY_USAGE_STATS_ENABLED": "0", "TZ": "UTC"}


def test_no_credential_looking_variable_reaches_a_worker(monkeypatch):
    for name, value in {**DROPPED, **KEPT}.items():
        monkeypatch.setenv(name, value)
    env = worker_environ()
    assert not set(DROPPED) & set(env), sorted(set(DROPPED) & set(env))
    assert {k: env[k] for k in KEPT} == KEPT

"""Operator commands: a key registered by its hash (the control plane's first key) authenticates,
with its scope; registering it again changes nothing."""
from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from typer.testing import CliRunner

from rgrid_service import admin
from rgrid_service.auth import tenant_for_key
from rgrid_service.db.models import ApiKey
from rgrid_service.db.session import engine_for
from rgrid_service.settings import get_settings


def invoke(monkeypatch, db_url: str, *args: str):
    monkeypatch.setenv("RGRID_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(admin.cli, list(args))
    finally:
        get_settings.cache_clear()


def test_register_key_hash_makes_an_operator_key_once(db_url, monkeypatch):
    key = "rg_made-by-the-deployer-0123456789"
    digest = hashlib.sha256(key.encode()).hexdigest()
    done = invoke(monkeypatch, db_url, "register-key-hash", "operator", digest, "--scope", "operator")
    assert done.exit_code == 0, done.output
    assert "Registered an operator key for tenant operator." in done.output
    engine = engine_for(db_url)
    assert tenant_for_key(engine, key) == "operator"
    again = invoke(monkeypatch, db_url, "register-key-hash", "operator", digest, "--scope", "operator")
    assert again.exit_code == 0 and "already registered" in again.output
    with engine.connect() as conn:
        rows = conn.execute(select(ApiKey.scope, func.count()).where(ApiKey.key_hash == digest)
                            .group_by(ApiKey.scope)).all()
    assert rows == [("operator", 1)]


def test_register_key_hash_refuses_what_is_not_a_sha256_or_a_scope(db_url, monkeypatch):
    bad = invoke(monkeypatch, db_url, "register-key-hash", "t", "rg_not-a-hash")
    assert bad.exit_code != 0 and "64 lowercase hex digits" in bad.output
    bad = invoke(monkeypatch, db_url, "register-key-hash", "t", "a" * 64, "--scope", "root")
    assert bad.exit_code != 0 and "tenant or operator" in bad.output

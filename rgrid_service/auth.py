"""API keys: only their sha256 is stored; a key maps to exactly one tenant."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from .db.session import write_tx
from .db.models import ApiKey, Tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "rg_" + secrets.token_urlsafe(32)


def create_key(engine: Engine, tenant_id: str, name: str | None = None) -> str:
    """Create the tenant if needed and return a fresh API key for it (shown once)."""
    key = new_key()
    with write_tx(engine) as conn:
        exists = conn.execute(select(Tenant.id).where(Tenant.id == tenant_id)).first()
        if not exists:
            conn.execute(insert(Tenant).values(id=tenant_id, name=name or tenant_id))
        conn.execute(insert(ApiKey).values(tenant_id=tenant_id, key_hash=hash_key(key)))
    return key


def tenant_for_key(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
        ).scalar()

"""API keys: only their sha256 is stored; a key maps to exactly one tenant and has a scope.

A `tenant` key sees its tenant's runs; an `operator` key also sees the fleet (workers, previews,
the history of updates) and may act on it."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine

from .db.session import write_tx
from .db.models import ApiKey, Tenant

TENANT_SCOPE = "tenant"
OPERATOR_SCOPE = "operator"
SCOPES = (TENANT_SCOPE, OPERATOR_SCOPE)


@dataclass(frozen=True)
class Caller:
    """Who a request's key speaks for."""

    tenant_id: str
    scope: str

    @property
    def operator(self) -> bool:
        return self.scope == OPERATOR_SCOPE


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "rg_" + secrets.token_urlsafe(32)


def create_key(engine: Engine, tenant_id: str, name: str | None = None, scope: str = TENANT_SCOPE) -> str:
    """Create the tenant if needed and return a fresh API key for it (shown once)."""
    if scope not in SCOPES:
        raise ValueError(f"An API key's scope is one of {', '.join(SCOPES)}, not {scope!r}.")
    key = new_key()
    with write_tx(engine) as conn:
        exists = conn.execute(select(Tenant.id).where(Tenant.id == tenant_id)).first()
        if not exists:
            conn.execute(insert(Tenant).values(id=tenant_id, name=name or tenant_id))
        conn.execute(insert(ApiKey).values(tenant_id=tenant_id, key_hash=hash_key(key), scope=scope))
    return key


def set_scope(engine: Engine, key: str, scope: str) -> bool:
    """Give an existing key another scope; False when no such key exists."""
    with write_tx(engine) as conn:
        return conn.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(scope=scope)).rowcount == 1


_VALID_KEY = select(ApiKey.tenant_id, ApiKey.scope).where(ApiKey.key_hash == bindparam("key_hash"),
                                                          ApiKey.revoked_at.is_(None))


def caller_for_key(engine: Engine, key: str) -> Caller | None:
    """The tenant and scope of a key that is not revoked; None for any other string."""
    return caller_for_hash(engine, hash_key(key))


def caller_for_hash(engine: Engine, key_hash: str) -> Caller | None:
    """caller_for_key by the key's sha256 (hash_key): the API hashes once for its cache and this."""
    with engine.connect() as conn:
        row = conn.execute(_VALID_KEY, {"key_hash": key_hash}).first()
    return None if row is None else Caller(row.tenant_id, row.scope)


def tenant_for_key(engine: Engine, key: str) -> str | None:
    caller = caller_for_key(engine, key)
    return None if caller is None else caller.tenant_id

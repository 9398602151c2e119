"""The control plane's own secret and the two keys derived from it: worker tokens and sealed env values.

One setting, RGRID_SECRET_KEY, held by the API and the orchestrator only (never by a worker). HKDF
derives from it:
- a key for worker tokens: `rgw_<worker id>.<hex HMAC-SHA256 of the id>`. Deterministic, so the
  fleet (a Pulumi program re-rendering a worker's user_data on every `up`) gets the same token
  again without storing it anywhere; the worker's record is its issuance, and the record's
  `token_revoked_at` and state (lifecycle.token_refusal) its revocation;
- a Fernet key that seals a run's env values at rest (executions.env_sealed).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rgrid_core.workerwire import TOKEN_PREFIX

from .settings import ServiceSettings

SECRET_KEY_ENV = "RGRID_SECRET_KEY"  # set for the API and the orchestrator only, never passed on to a worker
MIN_SECRET_KEY = 32
NO_SECRET_KEY = (
    "RGRID_SECRET_KEY is not set: the control plane needs it for worker tokens and to seal env values. "
    "Set it (the same value) for the API and the orchestrator only, never for workers, e.g. to the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
)
SHORT_SECRET_KEY = (f"RGRID_SECRET_KEY is shorter than {MIN_SECRET_KEY} characters; set it to a longer random "
                    "string, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")


class MissingSecretKey(RuntimeError):
    """The control plane was started without a usable RGRID_SECRET_KEY (the message says how to set one)."""


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rgrid control plane", info=purpose).derive(secret)


class ControlPlaneKeys:
    """The keys derived from one secret key; build it with `keys_for(settings)`."""

    def __init__(self, secret_key: str):
        if len(secret_key) < MIN_SECRET_KEY:
            raise MissingSecretKey(SHORT_SECRET_KEY)
        secret = secret_key.encode()
        self._token_key = _derive(secret, b"rgrid worker tokens v1")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"rgrid env sealing v1")))

    # --- worker tokens -----------------------------------------------------------------------

    def _mac(self, worker_id: str) -> str:
        return hmac.new(self._token_key, worker_id.encode(), hashlib.sha256).hexdigest()

    def worker_token(self, worker_id: str) -> str:
        """The token of this worker: the same every time (nothing stored), useless without the key."""
        return f"{TOKEN_PREFIX}{worker_id}.{self._mac(worker_id)}"

    def token_worker(self, token: str) -> str | None:
        """The worker id a token was issued for, or None for any string this key did not make.
        Whether that worker may still use it is the database's say (lifecycle.token_refusal)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        worker_id, dot, mac = token[len(TOKEN_PREFIX):].rpartition(".")
        if not dot or not worker_id or len(worker_id) > 64:
            return None
        return worker_id if hmac.compare_digest(mac.encode(), self._mac(worker_id).encode()) else None

    # --- env values ----------------------------------------------------------------------------

    def seal_env(self, env: dict[str, str]) -> str:
        """The env values encrypted (and authenticated) for the database."""
        return self._fernet.encrypt(json.dumps(env, sort_keys=True).encode()).decode()

    def open_env(self, sealed: str) -> dict[str, str]:
        """The env values back; ValueError (no value in it) when sealed by another key or altered."""
        try:
            return json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise ValueError("These env values were sealed with another RGRID_SECRET_KEY (or altered); "
                             "they cannot be opened. Set the key they were sealed with, or run again.") from None


@lru_cache(maxsize=8)
def _keys(secret_key: str) -> ControlPlaneKeys:
    return ControlPlaneKeys(secret_key)


def keys_for(settings: ServiceSettings) -> ControlPlaneKeys:
    """The control plane's keys; MissingSecretKey (a sentence with the next step) without a key."""
    if settings.secret_key is None or not settings.secret_key.get_secret_value():
        raise MissingSecretKey(NO_SECRET_KEY)
    return _keys(settings.secret_key.get_secret_value())


def has_keys(settings: ServiceSettings) -> bool:
    return settings.secret_key is not None and len(settings.secret_key.get_secret_value()) >= MIN_SECRET_KEY

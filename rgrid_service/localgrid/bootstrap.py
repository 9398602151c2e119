"""One-time set-up of a local grid's control plane: credentials, its secret key, schema, API key, bucket."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from sqlalchemy import update

from rgrid_core.retry import retrying
from rgrid_core.states import WorkerState

from ..auth import OPERATOR_SCOPE, create_key, set_scope
from ..db.models import Worker
from ..db.session import engine_for, upgrade_schema, write_tx
from ..settings import ServiceSettings
from ..storage import ObjectStore
from ..raynet import new_token, write_token
from .layout import local_dir, ray_token_file


def s3_keys(home: Path) -> tuple[str, str]:
    """The object store's access and secret key, made once per home (mode 0600)."""
    path = local_dir(home) / "s3-credentials.json"
    if path.exists():
        return tuple(json.loads(path.read_text()))
    keys = ("rgrid-" + secrets.token_hex(4), secrets.token_urlsafe(24))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys))
    path.chmod(0o600)
    return keys


def secret_key(home: Path) -> str:
    """The control plane's secret key (rgrid_service.secrets), made once per home (mode 0600) and
    handed to the API and the orchestrator only: workers get their token, never this."""
    path = local_dir(home) / "secret-key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key)
    path.chmod(0o600)
    return key


def ray_token(home: Path) -> Path:
    """The grid's Ray token file, made once per home (mode 0600); returns its path."""
    path = ray_token_file(home)
    if not path.exists():
        write_token(path, new_token())
    return path


def prepare_database(home: Path, database_url: str) -> str:
    """Migrate the schema, retire an earlier session's workers and return the local API key
    (made for tenant `local` on the first start). The local user operates their grid, so the key
    has operator scope; a key an older grid made is upgraded to it."""
    upgrade_schema(database_url)
    retire_workers(database_url)
    key_file = local_dir(home) / "api-key"
    if key_file.exists():
        key = key_file.read_text().strip()
        if set_scope(engine_for(database_url), key, OPERATOR_SCOPE):
            return key
        key_file.unlink()  # a key this database does not know (the database was replaced): make a new one
    key = create_key(engine_for(database_url), "local", "local user", scope=OPERATOR_SCOPE)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def prepare_bucket(settings: ServiceSettings) -> None:
    """The bucket, once the freshly started store answers."""
    retrying(lambda: ObjectStore(settings).ensure_bucket(), seconds=30)


def retire_workers(database_url: str) -> None:
    """Workers of an earlier local grid session are gone for good (the pulumi fleet's servers are
    deleted through the stack when the grid stops): mark them deleted, with when, so their paid
    hours end there (policies/costs)."""
    from ..db.clock import utcnow
    from ..lifecycle import token_revoked

    with write_tx(engine_for(database_url)) as conn:
        conn.execute(update(Worker).where(Worker.state.not_in((WorkerState.DEAD, WorkerState.DELETED)))
                     .values(state=WorkerState.DELETED, **token_revoked()))
        conn.execute(update(Worker).where(Worker.deleted_at.is_(None)).values(deleted_at=utcnow()))

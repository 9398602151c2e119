"""Retention: deletes from the store the files of runs that ended longer than the retention time
ago and kept inputs nobody used for as long (the rule: policies.retention), a batch per pass.

A run's files are deleted first and marked expired after (files_expired_at), so a pass that fails
half-way is simply done again. A blob's row is deleted first, conditionally (still unused since
the snapshot), and its object after: a create that reuses it at the same moment either marks it
used first (and it stays) or finds it gone and says so (api.service.still_kept).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Engine

from rgrid_core.states import TERMINAL, ExecutionStatus

from .. import lifecycle
from ..api.uploads import staging_prefix
from ..db.models import Blob, Execution
from ..db.session import write_tx
from ..policies.retention import EndedRun, KeptBlob, expired_blobs, expired_runs
from ..settings import ServiceSettings
from ..storage import ObjectStore

log = logging.getLogger("rgrid.orchestrator")
NOT_ENDED = (ExecutionStatus.UPLOADING, ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


def last_use():
    return func.coalesce(Blob.last_used_at, Blob.created_at)


def expire_runs(engine: Engine, store: ObjectStore, retention: timedelta, batch: int) -> list[str]:
    """Delete the files of ended runs past retention; their ids."""
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
        rows = conn.execute(
            select(Execution.id, Execution.finished_at, Execution.inputs)
            .where(Execution.finished_at <= now - retention, Execution.files_expired_at.is_(None),
                   Execution.status.in_([str(s) for s in TERMINAL]))
            .order_by(Execution.finished_at).limit(batch)
        ).all()
    done = expired_runs(now, retention, [EndedRun(r.id, r.finished_at) for r in rows])
    inputs = {r.id: r.inputs or [] for r in rows}
    for execution_id in done:
        abort_uploads(store, inputs[execution_id])
        store.delete_prefix(f"executions/{execution_id}/")
        store.delete_prefix(staging_prefix(execution_id))
    if done:
        with write_tx(engine) as conn:
            conn.execute(update(Execution).where(Execution.id.in_(done), Execution.files_expired_at.is_(None))
                         .values(files_expired_at=lifecycle.utcnow()))
    return done


def abort_uploads(store: ObjectStore, inputs: list[dict]) -> None:
    """Abort the multipart uploads of a run that was never submitted: their parts are invisible to
    a listing, so deleting the prefix would leave them in the store."""
    from minio.error import S3Error

    for spec in inputs:
        if spec.get("upload_id"):
            try:
                store.client._abort_multipart_upload(store.bucket, spec["object_key"], spec["upload_id"])
            except S3Error as e:
                if e.code != "NoSuchUpload":
                    raise


def expire_blobs(engine: Engine, store: ObjectStore, retention: timedelta, batch: int) -> list[str]:
    """Delete kept inputs no run used within retention and no unended run names; their keys."""
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
        cutoff = now - retention
        rows = conn.execute(
            select(Blob.tenant_id, Blob.sha256, Blob.object_key, last_use().label("used"))
            .where(last_use() <= cutoff).limit(batch)
        ).all()
        needed: set[str] = set()
        if rows:
            for inputs in conn.execute(select(Execution.inputs).where(
                    Execution.status.in_(NOT_ENDED), Execution.tenant_id.in_({r.tenant_id for r in rows}))).scalars():
                needed.update(spec.get("object_key") for spec in inputs or [])
    blobs = [KeptBlob(r.tenant_id, r.sha256, r.object_key, _naive(r.used), r.object_key in needed) for r in rows]
    gone = []
    for b in expired_blobs(now, retention, blobs):
        with write_tx(engine) as conn:
            deleted = conn.execute(delete(Blob).where(
                and_(Blob.tenant_id == b.tenant_id, Blob.sha256 == b.sha256, last_use() <= cutoff))).rowcount
        if deleted:
            store.client.remove_object(store.bucket, b.object_key)
            gone.append(b.object_key)
    return gone


def _naive(value) -> datetime:
    if isinstance(value, str):  # SQLite returns coalesce() of times as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def retention_tick(settings: ServiceSettings, engine: Engine, store: ObjectStore | None = None) -> tuple[int, int]:
    """One pass: (runs whose files were deleted, kept inputs deleted)."""
    store = store or ObjectStore.shared(settings)
    runs = expire_runs(engine, store, settings.retention, settings.retention_batch)
    blobs = expire_blobs(engine, store, settings.retention, settings.retention_batch)
    if runs or blobs:
        log.info("retention: deleted the files of %d ended run(s) and %d unused input(s)", len(runs), len(blobs))
    return len(runs), len(blobs)

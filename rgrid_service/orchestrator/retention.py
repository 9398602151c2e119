"""Retention: deletes from the store the files of runs that ended longer than the retention time
ago and kept inputs nobody used for as long (the rule: policies.retention), a batch per pass.

A run's files are deleted first and marked expired after (files_expired_at), so a pass that fails
half-way is simply done again; a run whose files the store refuses is logged and left for the next
pass, the others go on. A blob's row is deleted first, conditionally (still unused since
the snapshot), and its object after: a create that reuses it at the same moment either marks it
used first (and it stays) or finds it gone and says so (api.service.still_kept). An object left
without its row (a crash between the two deletes, a damaged input forgotten whose object could not
be deleted, a submit that lost its race after copying) is found by a sweep of blobs/ (a window per
pass) and deleted once older than the retention time.
"""
from __future__ import annotations

import itertools
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
            # Both columns: the order of ix_executions_files_expired_finished, read from its start
            # (files_expired_at is NULL in every row asked for; see migration 0010).
            .order_by(Execution.files_expired_at, Execution.finished_at).limit(batch)
        ).all()
    done = expired_runs(now, retention, [EndedRun(r.id, r.finished_at) for r in rows])
    inputs = {r.id: r.inputs or [] for r in rows}
    failed = []
    for execution_id in done:
        try:
            abort_uploads(store, inputs[execution_id])
            store.delete_prefix(f"executions/{execution_id}/")
            store.delete_prefix(staging_prefix(execution_id))
        except Exception as e:  # noqa: BLE001 - one run the store refuses must not stall every pass
            log.warning("retention: could not delete the files of %s (%s); the next pass tries again",
                        execution_id, e)
            failed.append(execution_id)
    done = [e for e in done if e not in failed]
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
            except S3Error as e:  # one upload the store refuses to abort must not stall the pass
                if e.code != "NoSuchUpload":
                    log.warning("retention: could not abort the upload of %s (%s); its parts stay",
                                spec["object_key"], e)


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


_orphan_cursor: dict[str, str | None] = {"after": None}


def expire_orphans(engine: Engine, store: ObjectStore, grace: timedelta, batch: int) -> list[str]:
    """Delete objects under blobs/ that no row names and that are older than `grace` (a submit
    copies an input there just before its row commits): left by a crash between a row's delete
    and its object's, a failed delete, or a submit that lost its race. A window of `batch`
    objects per pass, resumed where the last pass stopped; their keys."""
    listed = list(itertools.islice(store.client.list_objects(
        store.bucket, prefix="blobs/", recursive=True, start_after=_orphan_cursor["after"]), batch))
    _orphan_cursor["after"] = listed[-1].object_name if len(listed) == batch else None
    if not listed:
        return []
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
        named = set(conn.execute(select(Blob.object_key).where(
            Blob.object_key.in_([o.object_name for o in listed]))).scalars())
    cutoff = _naive(now) - grace
    gone = []
    for obj in listed:
        if obj.object_name in named or obj.last_modified is None or _naive(obj.last_modified) > cutoff:
            continue
        try:
            store.client.remove_object(store.bucket, obj.object_name)
            gone.append(obj.object_name)
        except Exception as e:  # noqa: BLE001 - the next round tries again
            log.warning("retention: could not delete the orphaned object %s (%s)", obj.object_name, e)
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
    orphans = expire_orphans(engine, store, settings.retention, settings.retention_batch)
    if runs or blobs or orphans:
        log.info("retention: deleted the files of %d ended run(s), %d unused input(s) and %d object(s) no "
                 "record named", len(runs), len(blobs), len(orphans))
    return len(runs), len(blobs)

"""Inputs on their way in: where a client uploads them, and what submit does with them.

A client never writes where a verified input is kept. Each input to upload goes to a staging key
of its own execution (uploads/<execution id>/<name>), by one presigned PUT, or by presigned
UploadPart URLs of a multipart upload when it is larger than the multipart threshold. Submit
completes a multipart upload, checks size (and MD5 against the ETag where the store's ETag is
one: not for multipart uploads, whose ETag is not the content's MD5), copies the object on the
server side to blobs/<tenant hash>/<sha256>, deletes the staging object, and the run's inputs name
the blob. A presigned URL used again after submit writes only to the staging key nobody reads.
The runner's sha256 check of every input it fetches remains the final guard.
"""
from __future__ import annotations

import math

from minio.commonconfig import CopySource
from minio.error import S3Error

from ..settings import ServiceSettings
from ..storage import ObjectStore, blob_key
from . import schemas

S3_MIN_PART = 5 * 1024 ** 2
S3_MAX_PARTS = 10_000


def staging_key(execution_id: str, name: str) -> str:
    return f"uploads/{execution_id}/{name}"


def staging_prefix(execution_id: str) -> str:
    return f"uploads/{execution_id}/"


def part_sizes(size: int, threshold: int, part_bytes: int) -> list[int] | None:
    """The sizes of the parts an input of `size` bytes is uploaded in, or None for one PUT. Parts
    are at least S3's 5 MiB, and larger than `part_bytes` when it would take over 10000."""
    if size <= threshold:
        return None
    part = max(part_bytes, S3_MIN_PART, math.ceil(size / S3_MAX_PARTS))
    full, rest = divmod(size, part)
    return [part] * full + ([rest] if rest else [])


def plan(store: ObjectStore, settings: ServiceSettings, execution_id: str,
         spec: dict) -> schemas.Upload:
    """Where the client uploads this input (writing `object_key` and, for multipart, `upload_id`
    and `parts` into its stored spec)."""
    key = spec["object_key"] = staging_key(execution_id, spec["name"])
    parts = part_sizes(spec["size"], settings.multipart_threshold_bytes, settings.multipart_part_bytes)
    if parts is None:
        return schemas.Upload(name=spec["name"], url=store.presign_put(key))
    upload_id = store.client._create_multipart_upload(store.bucket, key, {})
    spec["upload_id"], spec["parts"] = upload_id, parts
    urls = [store.presigner.get_presigned_url("PUT", store.bucket, key, expires=store.expiry,
                                              extra_query_params={"uploadId": upload_id, "partNumber": str(n)})
            for n in range(1, len(parts) + 1)]
    return schemas.Upload(name=spec["name"], url=None, upload_id=upload_id, part_bytes=parts[0], part_urls=urls)


def complete(store: ObjectStore, spec: dict) -> str | None:
    """Complete an input's multipart upload from the parts the store holds; the problem as a
    phrase when its parts are missing or of the wrong size."""
    key, upload_id, planned = spec["object_key"], spec["upload_id"], spec["parts"]
    parts, marker = [], None
    try:
        while True:
            page = store.client._list_parts(store.bucket, key, upload_id, max_parts=1000, part_number_marker=marker)
            parts += page.parts
            if not page.is_truncated:
                break
            marker = page.next_part_number_marker
    except S3Error as e:
        if e.code == "NoSuchUpload" and store.stat(key) is not None:
            return None  # completed by an earlier submit that failed later on
        return f"{spec['name']} was not uploaded ({e.code})"
    got = {p.part_number: p for p in parts}
    missing = [n for n in range(1, len(planned) + 1) if n not in got]
    if missing:
        return f"{spec['name']} lacks {len(missing)} of its {len(planned)} parts"
    wrong = [n for n, size in enumerate(planned, 1) if got[n].size is not None and got[n].size != size]
    if wrong:
        return f"part {wrong[0]} of {spec['name']} arrived with {got[wrong[0]].size} bytes instead of {planned[wrong[0] - 1]}"
    store.client._complete_multipart_upload(store.bucket, key, upload_id,
                                            [got[n] for n in range(1, len(planned) + 1)])
    return None


def verify(store: ObjectStore, spec: dict) -> str | None:
    """What is wrong with an uploaded input, as a phrase; None when it checks out: it exists with
    its declared size and, unless multipart, an ETag equal to its MD5."""
    if spec.get("upload_id"):
        problem = complete(store, spec)
        if problem:
            return problem
    stat = store.stat(spec["object_key"])
    if stat is None:
        return f"{spec['name']} was not uploaded"
    if stat.size != spec["size"]:
        return f"{spec['name']} arrived with {stat.size} bytes instead of {spec['size']}"
    if stat.etag and "-" not in stat.etag and stat.etag.strip('"') != spec["md5"]:
        return f"{spec['name']} arrived with a different checksum"
    return None


def keep(store: ObjectStore, tenant_id: str, spec: dict, held: bool) -> dict:
    """Copy a verified staging object to where the tenant's inputs are kept by content (unless
    `held`: a row names that key, whose object is never copied over) and point the spec at it. The staging object is
    deleted after the submit (forget)."""
    target = blob_key(tenant_id, spec["sha256"])
    if not held:
        store.client.copy_object(store.bucket, target, CopySource(store.bucket, spec["object_key"]))
    kept = {k: v for k, v in spec.items() if k not in ("upload_id", "parts")}
    kept["object_key"] = target
    return kept


def forget(store: ObjectStore, specs: list[dict]) -> None:
    """Delete staging objects that were copied to their blob (best effort: retention deletes
    what is left under the execution's staging prefix)."""
    for spec in specs:
        try:
            store.client.remove_object(store.bucket, spec["object_key"])
        except Exception:  # noqa: BLE001 - a leftover staging object is harmless and swept later
            pass


def drop_unrecorded(engine, store: ObjectStore, tenant_id: str, keys: set[str]) -> None:
    """A submit that lost (its run was canceled meanwhile) deletes the blob copies it made that no
    row names (a concurrent submit may have recorded the same key since: that one stays). Best
    effort: retention's sweep of blobs/ deletes what is left."""
    from sqlalchemy import select

    from ..db.models import Blob

    if not keys:
        return
    with engine.connect() as conn:
        named = set(conn.execute(select(Blob.object_key).where(Blob.tenant_id == tenant_id,
                                                                Blob.object_key.in_(keys))).scalars())
    for key in keys - named:
        try:
            store.client.remove_object(store.bucket, key)
        except Exception:  # noqa: BLE001 - swept by retention later
            pass


def discard(store: ObjectStore, execution_id: str, inputs: list[dict]) -> bool:
    """A run that will never be submitted (canceled, or its upload expired): abort its multipart
    uploads and delete its staging prefix now rather than at retention. Best effort (False when
    the store refused; retention tries again); a PUT to a URL still valid may write there again,
    which retention deletes and the quota counts meanwhile."""
    import logging

    try:
        for spec in inputs:
            if spec.get("upload_id"):
                try:
                    store.client._abort_multipart_upload(store.bucket, spec["object_key"], spec["upload_id"])
                except S3Error as e:
                    if e.code != "NoSuchUpload":
                        raise
        store.delete_prefix(staging_prefix(execution_id))
        return True
    except Exception as e:  # noqa: BLE001 - retention deletes what is left
        logging.getLogger("rgrid.api").warning("could not delete the staged uploads of %s (%s); retention will",
                                               execution_id, e)
        return False


def discard_soon(store: ObjectStore, execution_id: str, inputs: list[dict]):
    """discard() in a thread of its own, so a cancel answers without waiting on the store (a
    store that is down costs its client's retries); its thread."""
    import threading

    if not any(spec.get("upload") for spec in inputs):
        return None
    t = threading.Thread(target=discard, args=(store, execution_id, inputs), daemon=True,
                         name=f"discard-{execution_id}")
    t.start()
    return t

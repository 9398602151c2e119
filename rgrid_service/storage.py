"""Object store access (any S3: SeaweedFS locally, MinIO or Hetzner Object Storage in production).

Object layout: blobs/<tenant hash>/<sha256> for inputs (kept by content, see db.models.Blob),
executions/<id>/outputs/a<attempt>/<path> for outputs. Executions created before inputs were kept
by content read theirs from executions/<id>/inputs/<name>.
"""
from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from minio import Minio
from minio.error import S3Error
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.exceptions import HTTPError as Urllib3Error

from .settings import ServiceSettings

# A store that is down or restarting surfaces as urllib3 errors (MaxRetryError, ProtocolError),
# none of which is an OSError: without them here a store outage got no retries at all.
_TRANSIENT = (S3Error, OSError, ConnectionError, Urllib3Error)
_retry = retry(
    retry=retry_if_exception_type(_TRANSIENT),
    stop=stop_after_attempt(6),
    wait=wait_exponential(multiplier=0.5, max=8),
    reraise=True,
)

CHUNK = 1024 * 1024
WORKER_GETS_KEPT = 4096  # recently signed worker GETs kept for reuse, at most
_SHARED: dict[tuple, "ObjectStore"] = {}


def blob_key(tenant_id: str, sha256: str) -> str:
    """Where an input with this content lives for this tenant. The tenant part is hashed so any
    tenant id makes a plain key."""
    return f"blobs/{hashlib.sha256(tenant_id.encode()).hexdigest()[:16]}/{sha256}"


def output_key(execution_id: str, attempt: int, path: str) -> str:
    return f"executions/{execution_id}/outputs/a{attempt}/{path}"


class ObjectStore:
    def __init__(self, settings: ServiceSettings):
        self.bucket = settings.s3_bucket
        self.expiry = timedelta(seconds=settings.presign_expiry_seconds)
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        # Presigned URLs must name the host the *client* (or the worker) will use: the signature
        # covers it. Signing is local (no request).
        public = settings.s3_public_endpoint or settings.s3_endpoint
        self.presigner = self._signer(settings, public)
        self.worker_expiry = timedelta(seconds=settings.worker_presign_expiry_seconds)
        self.worker_put_expiry = timedelta(seconds=settings.worker_output_presign_expiry_seconds)
        self.worker_presigner = self._signer(settings, settings.s3_worker_endpoint or public)
        # key -> (monotonic time signed, URL): the worker GETs signed lately (presign_worker_get).
        self._worker_gets: dict[str, tuple[float, str]] = {}
        self._worker_get_reuse = settings.worker_presign_expiry_seconds / 20

    @staticmethod
    def _signer(settings: ServiceSettings, endpoint: str) -> Minio:
        return Minio(endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                     secure=settings.s3_secure, region=settings.s3_region)

    @classmethod
    def shared(cls, settings: ServiceSettings) -> "ObjectStore":
        """One store per process and configuration, so its connections are kept alive between
        runs instead of being opened anew for every execution."""
        key = (settings.s3_endpoint, settings.s3_public_endpoint, settings.s3_access_key, settings.s3_secret_key,
               settings.s3_secure, settings.s3_region, settings.s3_bucket, settings.presign_expiry_seconds,
               settings.s3_worker_endpoint, settings.worker_presign_expiry_seconds,
               settings.worker_output_presign_expiry_seconds)
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = cls(settings)
        return store

    @_retry
    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def presign_put(self, key: str) -> str:
        return self.presigner.presigned_put_object(self.bucket, key, expires=self.expiry)

    def presign_get(self, key: str) -> str:
        return self.presigner.presigned_get_object(self.bucket, key, expires=self.expiry)

    def presign_worker_get(self, key: str, fresh: bool = False) -> str:
        """A GET of one object for a worker: its endpoint, a short expiry. A URL of this object
        signed less than a twentieth of that expiry ago is handed out again (a batch's runs read
        the same script, and signing cost every claim about 40 us of CPU), so each still has at
        least 95 % of its time to run; fresh=True signs anew (for a worker whose URL expired)."""
        now = time.monotonic()
        if not fresh:
            recent = self._worker_gets.get(key)
            if recent is not None and now - recent[0] < self._worker_get_reuse:
                return recent[1]
        url = self.worker_presigner.presigned_get_object(self.bucket, key, expires=self.worker_expiry)
        if len(self._worker_gets) >= WORKER_GETS_KEPT:
            self._worker_gets.clear()  # only recent ones are ever reused: start again
        self._worker_gets[key] = (now, url)
        return url

    def presign_worker_put(self, key: str) -> str:
        """A PUT of one object for a worker: its endpoint, the shorter output expiry."""
        return self.worker_presigner.presigned_put_object(self.bucket, key, expires=self.worker_put_expiry)

    @_retry
    def stat(self, key: str):
        """Object metadata, or None when it does not exist."""
        try:
            return self.client.stat_object(self.bucket, key)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise

    @_retry
    def download_verified(self, key: str, dest: Path, sha256: str | None) -> str:
        """Stream an object to dest with constant memory; returns (and checks) its sha256."""
        digest = hashlib.sha256()
        resp = self.client.get_object(self.bucket, key)
        try:
            with open(dest, "wb") as f:
                for chunk in resp.stream(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
        finally:
            resp.close()
            resp.release_conn()
        got = digest.hexdigest()
        if sha256 and got != sha256:
            raise ChecksumMismatch(f"{key}: expected sha256 {sha256}, got {got}", key)
        return got

    @_retry
    def upload_file(self, key: str, path: Path) -> None:
        # minio switches to multipart above its part size, so memory stays bounded.
        self.client.fput_object(self.bucket, key, str(path), part_size=16 * CHUNK)

    @_retry
    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        self.client.put_object(self.bucket, key, stream, length)

    def delete_prefix(self, prefix: str) -> None:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            self.client.remove_object(self.bucket, obj.object_name)


class ChecksumMismatch(Exception):
    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key

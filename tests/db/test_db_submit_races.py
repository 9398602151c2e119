"""Submit against what happens meanwhile, on both databases: a blob kept under the same sha256
with another size or MD5 is never copied over (400 at create, 409 at submit); a run canceled while
its submit copies answers 409 and leaves no unrecorded copy; an upload expiry does not cancel a
run whose submit is in progress. The store here is the object store's boundary in memory (the real
SeaweedFS paths are tests/integration/test_files.py)."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, select

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth, lifecycle
from rgrid_service.api import service
from rgrid_service.api.errors import Conflict
from rgrid_service.db.clock import utcago, utcnow
from rgrid_service.db.models import Blob, Execution
from rgrid_service.storage import blob_key
from tests.db.test_db_auth_api import bearer, is_sentence

DATA = b"print('hi')\n"
SHA, MD5 = hashlib.sha256(DATA).hexdigest(), hashlib.md5(DATA).hexdigest()


class MemoryStore:
    """Objects by key; `on_copy` runs when submit copies (what happens meanwhile)."""

    bucket = "rgrid"

    def __init__(self, objects: dict[str, bytes], on_copy=lambda: None):
        self.objects, self.on_copy, self.client = objects, on_copy, self

    def stat(self, key):
        data = self.objects.get(key)
        return None if data is None else SimpleNamespace(size=len(data), etag=hashlib.md5(data).hexdigest())

    def copy_object(self, bucket, target, source):
        self.objects[target] = self.objects[source.object_name]
        self.on_copy()

    def remove_object(self, bucket, key):
        self.objects.pop(key, None)

    def delete_prefix(self, prefix):
        for key in [k for k in self.objects if k.startswith(prefix)]:
            del self.objects[key]

    def _abort_multipart_upload(self, bucket, key, upload_id):
        self.objects.pop(f"{key}#{upload_id}", None)  # its parts


@pytest.fixture
def run(engine, make_execution):
    """An uploading run of tenant-a whose s.py (DATA) is staged; (its id, the store)."""
    from sqlalchemy import update

    ex = make_execution(S.UPLOADING)
    spec = dict(name="s.py", kind="file", size=len(DATA), sha256=SHA, md5=MD5, upload=True,
                object_key=f"uploads/{ex}/s.py")
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex).values(inputs=[spec], created_at=utcago(600)))
    return ex, MemoryStore({spec["object_key"]: DATA})


def blobs(engine):
    with engine.connect() as conn:
        return conn.execute(select(Blob.sha256, Blob.size, Blob.md5)).all()


def status(engine, ex):
    with engine.connect() as conn:
        return conn.execute(select(Execution.status).where(Execution.id == ex)).scalar_one()


def test_a_submit_keeps_its_input(engine, run):
    ex, store = run
    assert service.submit(engine, store, "tenant-a", ex).status == S.QUEUED
    assert store.objects == {blob_key("tenant-a", SHA): DATA}
    assert blobs(engine) == [(SHA, len(DATA), MD5)]


def test_a_kept_blob_is_never_copied_over_by_a_submit_declaring_it_otherwise(engine, run):
    ex, store = run
    key = blob_key("tenant-a", SHA)
    store.objects[key] = b"verified"
    with engine.begin() as conn:  # another run kept this sha256, with its own size and MD5
        conn.execute(insert(Blob).values(tenant_id="tenant-a", sha256=SHA, size=8, md5="0" * 32, object_key=key,
                                         created_at=utcnow()))
    with pytest.raises(Conflict) as refused:
        service.submit(engine, store, "tenant-a", ex)
    assert is_sentence(str(refused.value)) and "you uploaded before has 8 bytes" in str(refused.value)
    assert store.objects[key] == b"verified"
    assert status(engine, ex) == S.UPLOADING


def test_a_create_declaring_a_kept_sha256_otherwise_is_refused(api, engine):
    key = auth.create_key(engine, "tenant-a")
    with engine.begin() as conn:
        conn.execute(insert(Blob).values(tenant_id="tenant-a", sha256=SHA, size=8, md5="0" * 32,
                                         object_key=blob_key("tenant-a", SHA), created_at=utcnow()))
    body = dict(script="s.py", inputs=[dict(name="s.py", kind="file", size=len(DATA), sha256=SHA, md5=MD5)])
    r = api.post("/v1/executions", json=body, headers=bearer(key))
    assert r.status_code == 400 and is_sentence(r.json()["detail"]), r.text
    assert "Nothing was created" in r.json()["detail"]


def test_a_run_canceled_while_its_submit_copies_answers_409_and_keeps_no_copy(engine, run):
    ex, store = run
    store.on_copy = lambda: lifecycle.cancel(engine, ex)
    with pytest.raises(Conflict) as refused:
        service.submit(engine, store, "tenant-a", ex)
    assert is_sentence(str(refused.value)) and "canceled" in str(refused.value)
    assert blob_key("tenant-a", SHA) not in store.objects
    assert blobs(engine) == [] and status(engine, ex) == S.CANCELED


def test_an_upload_expiry_does_not_cancel_a_run_whose_submit_is_in_progress(engine, run):
    from datetime import timedelta

    ex, store = run
    expired = []
    store.on_copy = lambda: expired.append(len(lifecycle.expire_uploads(engine, utcnow_py() - timedelta(seconds=300))))
    assert service.submit(engine, store, "tenant-a", ex).status == S.QUEUED
    assert expired == [0]


def test_a_refused_submit_leaves_the_run_to_the_upload_expiry(engine, run):
    from datetime import timedelta

    ex, store = run
    store.objects.clear()  # never uploaded
    with pytest.raises(Conflict):
        service.submit(engine, store, "tenant-a", ex)
    assert len(lifecycle.expire_uploads(engine, utcnow_py() - timedelta(seconds=300))) == 1


def utcnow_py():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


def test_a_run_canceled_while_uploading_loses_its_staged_uploads_at_once(engine, run):
    ex, store = run
    service.cancel(engine, "tenant-a", ex, store)
    gone(store)


def test_a_batch_canceled_while_uploading_loses_its_staged_uploads_at_once(engine, run, make_execution):
    from sqlalchemy import update

    ex, store = run
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex).values(batch_id="b1"))
    service.cancel_batch(engine, "tenant-a", "b1", store)
    assert status(engine, ex) == S.CANCELED
    gone(store)


def test_an_expired_upload_loses_its_staged_uploads_and_multipart_parts(engine, run):
    from datetime import timedelta
    from sqlalchemy import update

    from rgrid_service.orchestrator.health import discard_staged
    from rgrid_service.settings import ServiceSettings

    ex, store = run
    big = dict(name="big", kind="file", size=9, sha256="b" * 64, md5="c" * 32, upload=True,
               object_key=f"uploads/{ex}/big", upload_id="u-1", parts=[5, 4])
    with engine.begin() as conn:
        inputs = conn.execute(select(Execution.inputs).where(Execution.id == ex)).scalar_one()
        conn.execute(update(Execution).where(Execution.id == ex).values(inputs=inputs + [big]))
    store.objects[f"uploads/{ex}/big#u-1"] = b"parts"
    expired = lifecycle.expire_uploads(engine, utcnow_py() - timedelta(seconds=300))
    assert [r.id for r in expired] == [ex]
    discard_staged(ServiceSettings(database_url="x"), expired, store)
    gone(store)


def gone(store: MemoryStore, within: float = 30.0) -> None:
    """The cancel deletes in the background: wait for the store to be empty."""
    import time

    deadline = time.monotonic() + within
    while store.objects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.objects == {}

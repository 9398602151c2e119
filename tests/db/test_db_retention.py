"""Retention on both databases, with a retention of seconds: which runs' files and which kept
inputs the job deletes, that it marks the runs expired, that kept inputs in use stay, and the 410
with its sentence. The store here records what the job deletes (tests/integration/test_files.py
runs the same job against SeaweedFS)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select, update

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth
from rgrid_service.db.clock import utcago
from rgrid_service.db.models import Blob, Execution
from rgrid_service import lifecycle
from rgrid_service.orchestrator import retention
from rgrid_service.orchestrator.retention import expire_blobs, expire_orphans, expire_runs, retention_tick
from rgrid_service.settings import ServiceSettings
from tests.db.test_db_auth_api import bearer, is_sentence


class RecordingStore:
    """The object store's boundary as the job uses it: what it was asked to delete."""

    bucket = "rgrid"

    def __init__(self, objects: dict[str, float] | None = None):
        self.prefixes, self.keys, self.aborted = [], [], []
        self.objects = objects or {}  # key -> seconds since it was written (what a listing shows)
        self.client = self

    def list_objects(self, bucket: str, prefix: str, recursive: bool, start_after: str | None = None):
        from datetime import datetime, timezone
        from types import SimpleNamespace

        for key in sorted(self.objects):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield SimpleNamespace(object_name=key, last_modified=datetime.now(timezone.utc) - timedelta(seconds=self.objects[key]))

    def delete_prefix(self, prefix: str) -> None:
        self.prefixes.append(prefix)

    def remove_object(self, bucket: str, key: str) -> None:
        self.keys.append(key)
        self.objects.pop(key, None)

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.aborted.append((key, upload_id))


def blob(engine, tenant: str, sha: str, used_ago: float | None, created_ago: float = 3600) -> str:
    key = f"blobs/{tenant}/{sha}"
    with engine.begin() as conn:
        conn.execute(insert(Blob).values(tenant_id=tenant, sha256=sha, size=1, md5="f" * 32, object_key=key,
                                         created_at=utcago(created_ago),
                                         last_used_at=None if used_ago is None else utcago(used_ago)))
    return key


def test_files_of_runs_ended_past_retention_are_deleted_and_marked(engine, make_execution):
    old = make_execution(S.SUCCEEDED, finished_at=utcago(120))
    old_failed = make_execution(S.FAILED, finished_at=utcago(90))
    recent = make_execution(S.SUCCEEDED, finished_at=utcago(5))
    running = make_execution(S.RUNNING, finished_at=utcago(120))  # a re-run: its old finished_at does not count
    queued = make_execution(S.QUEUED)
    never_submitted = make_execution(S.CANCELED, finished_at=utcago(100), inputs=[
        {"name": "big", "upload": True, "object_key": "uploads/x/big", "upload_id": "u-1", "parts": [5]}])
    store = RecordingStore()

    done = expire_runs(engine, store, timedelta(seconds=60), 100)
    assert sorted(done) == sorted([old, old_failed, never_submitted])
    assert sorted(store.prefixes) == sorted(f"{top}/{ex}/" for ex in (old, old_failed, never_submitted)
                                            for top in ("executions", "uploads"))
    # A multipart upload never completed is aborted (its parts do not show in a listing).
    assert store.aborted == [("uploads/x/big", "u-1")]
    with engine.connect() as conn:
        expired = dict(conn.execute(select(Execution.id, Execution.files_expired_at)).all())
    assert expired[old] and expired[old_failed] and expired[never_submitted]
    assert expired[recent] is None and expired[running] is None and expired[queued] is None
    # Done once: a second pass finds nothing.
    assert expire_runs(engine, RecordingStore(), timedelta(seconds=60), 100) == []
    # A batch: at most that many per pass, oldest first.
    more = [make_execution(S.CANCELED, finished_at=utcago(200 + i)) for i in range(3)]
    assert expire_runs(engine, RecordingStore(), timedelta(seconds=60), 2) == [more[2], more[1]]


def test_kept_inputs_unused_past_retention_and_not_needed_are_deleted(engine, make_execution):
    make_execution(S.SUCCEEDED)  # the tenant
    unused = blob(engine, "tenant-a", "1" * 64, used_ago=None, created_ago=120)
    used_lately = blob(engine, "tenant-a", "2" * 64, used_ago=5, created_ago=120)
    fresh = blob(engine, "tenant-a", "3" * 64, used_ago=None, created_ago=5)
    needed = blob(engine, "tenant-a", "4" * 64, used_ago=120, created_ago=120)
    make_execution(S.QUEUED, inputs=[{"name": "a", "sha256": "4" * 64, "object_key": needed}])
    make_execution(S.SUCCEEDED, inputs=[{"name": "a", "sha256": "1" * 64, "object_key": unused}])
    store = RecordingStore()

    assert expire_blobs(engine, store, timedelta(seconds=60), 100) == [unused]
    assert store.keys == [unused]
    with engine.connect() as conn:
        left = set(conn.execute(select(Blob.object_key)).scalars())
    assert left == {used_lately, fresh, needed}


def test_a_create_reusing_a_kept_input_marks_it_used_so_retention_keeps_it(api, engine):
    from tests.db.test_db_auth_api import body

    key = auth.create_key(engine, "tenant-a")
    spec = body()["inputs"][0]
    blob(engine, "tenant-a", spec["sha256"], used_ago=None, created_ago=120)
    with engine.begin() as conn:
        conn.execute(update(Blob).values(md5=spec["md5"], size=spec["size"]))
    r = api.post("/v1/executions", json=body(submit=True), headers=bearer(key))
    assert r.status_code == 201 and r.json()["reused"] == ["s.py"]
    assert expire_blobs(engine, RecordingStore(), timedelta(seconds=60), 100) == []


def test_outputs_of_an_expired_run_answer_410_with_a_sentence(api, engine, make_execution, db_url):
    ex = make_execution(S.SUCCEEDED, finished_at=utcago(3))
    key = auth.create_key(engine, "tenant-a")
    assert api.get(f"/v1/executions/{ex}/outputs", headers=bearer(key)).status_code == 200
    settings = ServiceSettings(database_url=db_url, retention_seconds=1)
    assert retention_tick(settings, engine, RecordingStore()) == (1, 0)
    r = api.get(f"/v1/executions/{ex}/outputs", headers=bearer(key))
    assert r.status_code == 410
    detail = r.json()["detail"]
    with engine.connect() as conn:
        day = conn.execute(select(Execution.files_expired_at).where(Execution.id == ex)).scalar_one()
    # The API's retention is its settings' (the default 7 days here).
    assert detail == (f"The files of {ex} were deleted on {day:%Y-%m-%d} after 7 days of retention; "
                      "run it again to get them.")
    assert is_sentence(detail)


def test_a_damaged_input_forgotten_loses_its_object_too(engine, make_execution):
    make_execution(S.SUCCEEDED)  # the tenants
    make_execution(S.SUCCEEDED, tenant_id="tenant-b")
    key = blob(engine, "tenant-a", "5" * 64, used_ago=None)
    other = blob(engine, "tenant-b", "5" * 64, used_ago=None)
    store = RecordingStore({key: 1, other: 1})
    assert lifecycle.forget_blob(engine, key, tenant_id="tenant-a", store=store) == 1
    assert store.keys == [key] and list(store.objects) == [other]
    # Nothing forgotten (already gone): the store is not asked.
    assert lifecycle.forget_blob(engine, key, tenant_id="tenant-a", store=store) == 0
    assert store.keys == [key]


def test_objects_under_blobs_that_no_row_names_are_swept_a_window_per_pass(engine, make_execution, monkeypatch):
    make_execution(S.SUCCEEDED)  # the tenant
    monkeypatch.setitem(retention._orphan_cursor, "after", None)
    kept = blob(engine, "tenant-a", "6" * 64, used_ago=None)
    orphans = [f"blobs/tenant-a/{c * 64}" for c in "789"]
    young = "blobs/tenant-a/" + "a" * 64  # a submit's copy whose row is about to commit
    store = RecordingStore({kept: 600, **{k: 600 for k in orphans}, young: 1, "executions/x/outputs/a1/o": 600})
    assert expire_orphans(engine, store, timedelta(seconds=60), 2) == orphans[:1]  # window: kept, orphan 7
    assert expire_orphans(engine, store, timedelta(seconds=60), 2) == orphans[1:]  # then 8, 9
    assert expire_orphans(engine, store, timedelta(seconds=60), 2) == []  # a and the end: round again
    assert sorted(store.objects) == sorted([kept, young, "executions/x/outputs/a1/o"])


def test_a_run_whose_files_the_store_refuses_does_not_stall_the_others(engine, make_execution):
    from minio.error import S3Error

    stuck = make_execution(S.CANCELED, finished_at=utcago(300), inputs=[
        {"name": "big", "upload": True, "object_key": "uploads/s/big", "upload_id": "u-9", "parts": [5]}])
    refused = make_execution(S.CANCELED, finished_at=utcago(250))
    fine = make_execution(S.SUCCEEDED, finished_at=utcago(200))

    class RefusingStore(RecordingStore):
        def _abort_multipart_upload(self, bucket, key, upload_id):
            raise S3Error(None, "AccessDenied", "denied", key, "r", "h")

        def delete_prefix(self, prefix):
            if refused in prefix:
                raise S3Error(None, "InternalError", "down", prefix, "r", "h")
            super().delete_prefix(prefix)

    assert expire_runs(engine, RefusingStore(), timedelta(seconds=60), 100) == [stuck, fine]
    # The refused run is tried again by the next pass, and goes once the store takes it.
    assert expire_runs(engine, RecordingStore(), timedelta(seconds=60), 100) == [refused]

"""The attack test (issue #11): with one worker's token, every worker-API action on another worker's
runs, on other tenants' objects, and after revocation is refused, and nothing changes.

Real app, real SeaweedFS (run under the machine's lock, see test_db_worker_api.py), both databases.
"""
from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import func, select

from rgrid_core import workerwire as wire
from rgrid_service import lifecycle
from rgrid_service.db.models import Blob, Execution, LogChunk
from tests.db.workers import ControlPlane

SHARED = b"the same file, uploaded by two tenants\n"


@pytest.fixture
def plane(db_url, seaweed):
    cp = ControlPlane(db_url, seaweed)
    yield cp
    cp.close()


def refused(r, *codes) -> bool:
    return r.status_code in codes and isinstance(r.json().get("detail"), str) and len(r.json()["detail"]) > 20


def blobs(plane) -> dict:
    with plane.engine.connect() as conn:
        return {(b.tenant_id, b.sha256): b.object_key for b in conn.execute(select(Blob.tenant_id, Blob.sha256,
                                                                                   Blob.object_key))}


def log_count(plane, run) -> int:
    with plane.engine.connect() as conn:
        return conn.execute(select(func.count()).where(LogChunk.execution_id == run)).scalar_one()


def test_a_worker_token_acts_on_no_other_workers_runs(plane):
    mallory, victim = plane.worker(), plane.worker()
    theirs, _ = plane.claimed(victim, tenant="tenant-b", env={"THEIR_SECRET": "do-not-leak"},
                              files={"job.py": b"x\n", "data.csv": SHARED})
    victim_out = victim.upload(theirs, 1, {"out.txt": b"victim's"})
    queued_for_victim = plane.submit(tenant="tenant-b")
    plane.dispatch(queued_for_victim, victim)
    before, kept = plane.row(theirs), blobs(plane)

    attempts = {
        "claim a run dispatched elsewhere": mallory.claim(queued_for_victim),
        "claim a running run": mallory.claim(theirs),
        "renew": mallory.renew(theirs, 1, b"injected log"),
        "input URL": mallory.get(wire.INPUT_URL, id=theirs, attempt=1, name="data.csv"),
        "damaged input": mallory.post(wire.DAMAGED_INPUT, id=theirs, attempt=1, name="data.csv"),
        "output URLs": mallory.output_urls(theirs, 1, {"out.txt": b"evil"}),
        "finish": mallory.finish(theirs, 1, status="failed"),
        "finish with the victim's outputs": mallory.finish(theirs, 1, outputs=victim_out),
        "a later attempt": mallory.renew(theirs, 2),
    }
    for what, r in attempts.items():
        assert refused(r, 403), f"{what}: {r.status_code} {r.text}"
        assert "do-not-leak" not in r.text

    after = plane.row(theirs)
    assert (after.status, after.attempt, after.worker_id, after.heartbeat_at) == \
        (before.status, before.attempt, before.worker_id, before.heartbeat_at)
    assert plane.row(queued_for_victim).status == "queued"
    assert log_count(plane, theirs) == 0
    assert plane.store.stat(f"executions/{theirs}/outputs/a1/out.txt") is not None, "the victim's upload is untouched"
    assert blobs(plane) == kept
    assert victim.finish(theirs, 1, outputs=victim_out).status_code == 200


def test_a_worker_reaches_only_its_own_runs_objects(plane):
    mallory = plane.worker()
    other_tenants = plane.submit(tenant="tenant-b", files={"job.py": b"b\n", "data.csv": SHARED})
    mine, claim = plane.claimed(mallory, tenant="tenant-a", files={"job.py": b"a\n", "data.csv": SHARED})
    kept = blobs(plane)
    sha = hashlib.sha256(SHARED).hexdigest()
    assert ("tenant-a", sha) in kept and ("tenant-b", sha) in kept

    for name in ("secret.txt", "job.py.bak", "data.csv.."):
        assert refused(mallory.get(wire.INPUT_URL, id=mine, attempt=1, name=name), 404), name
    for name in ("..", "data.csv%2F..%2F..%2Fjob.py"):  # no route at all
        r = mallory.get(wire.INPUT_URL, id=mine, attempt=1, name=name)
        assert r.status_code == 404 and "url" not in r.text, name
    assert refused(mallory.post(wire.DAMAGED_INPUT, id=mine, attempt=1, name="nonesuch"), 404)

    # Its own run's damaged input: only its tenant's record is forgotten, never the other tenant's.
    r = mallory.post(wire.DAMAGED_INPUT, id=mine, attempt=1, name="data.csv")
    assert r.status_code == 200 and r.json() == {"forgotten": True}
    left = blobs(plane)
    assert ("tenant-a", sha) not in left and left[("tenant-b", sha)] == kept[("tenant-b", sha)]

    for path in ("../escape.txt", "/etc/passwd", "a/../../b", "a/./b", "a//b", "back\\slash", "", "x/"):
        r = mallory.output_urls(mine, 1, {path: b"1"})
        assert refused(r, 400, 422), f"{path!r}: {r.status_code}"
        assert "url" not in r.text
        r = mallory.finish(mine, 1, outputs=[{"path": path, "size": 1, "sha256": "0" * 64}])
        assert refused(r, 400, 422), f"{path!r}: {r.status_code}"
    assert plane.row(mine).status == "running"

    # A presigned URL is one object's: bent to another key (the other tenant's run), the store refuses it.
    (url,) = [u["url"] for u in mallory.output_urls(mine, 1, {"out.txt": b"x"}).json()["urls"]]
    parts = urlsplit(url)
    bent = urlunsplit(parts._replace(path=parts.path.replace(mine, other_tenants)))
    assert httpx.put(bent, content=b"overwrite").status_code == 403
    get_url = claim["inputs"][0]["url"]
    parts = urlsplit(get_url)
    other_blob = kept[("tenant-b", sha)]
    bent = urlunsplit(parts._replace(path=f"/{plane.settings.s3_bucket}/{other_blob}"))
    assert httpx.get(bent).status_code == 403


def test_after_revocation_the_token_does_nothing(plane):
    mallory = plane.worker()
    mine, _ = plane.claimed(mallory)
    outputs = mallory.upload(mine, 1, {"out.txt": b"written before death"})
    next_run = plane.submit()
    plane.dispatch(next_run, mallory)
    lifecycle.declare_dead(plane.engine, mallory.id, "cut off from the control plane")

    for r in (mallory.register(), mallory.post(wire.HEARTBEAT), mallory.claim(next_run), mallory.claim(mine),
              mallory.renew(mine, 1, b"late"), mallory.get(wire.INPUT_URL, id=mine, attempt=1, name="job.py"),
              mallory.post(wire.DAMAGED_INPUT, id=mine, attempt=1, name="job.py"),
              mallory.output_urls(mine, 1, {"more.txt": b"1"}), mallory.finish(mine, 1, outputs=outputs)):
        assert refused(r, 403), r.text
    assert plane.row(mine).status == "queued" and plane.row(next_run).status == "queued"
    assert log_count(plane, mine) == 0
    assert plane.store.stat(f"executions/{mine}/outputs/a1/out.txt") is None, "its late outputs are not taken"
    with plane.engine.connect() as conn:
        assert conn.execute(select(Execution.worker_id).where(Execution.id == mine)).scalar() == mallory.id

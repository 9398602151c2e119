"""The worker API through the real app, on SQLite and PostgreSQL, with a real SeaweedFS: a worker
holding only its token claims, renews, fetches and puts files through presigned URLs, and commits;
fenced, given-up and foreign callers are refused; env values are sealed at rest and gone at the end.

SeaweedFS is a heavy process: run this file under the machine's lock
(`flock /tmp/rgrid-heavy.lock env PYTHONPATH=$PWD .venv/bin/python -m pytest tests/db/test_db_worker_api.py`).
"""
from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from sqlalchemy import insert, select, update

from rgrid_core import workerwire as wire
from rgrid_core.states import WorkerState
from rgrid_service import lifecycle
from rgrid_service.db.models import Blob, Execution, ExecutionAttempt, Tenant, Worker
from rgrid_service.fleet import records
from tests.db.workers import ControlPlane

SECRET = "hunter2-very-secret-value"


@pytest.fixture
def plane(db_url, seaweed):
    cp = ControlPlane(db_url, seaweed)
    yield cp
    cp.close()


def is_sentence(r) -> bool:
    detail = r.json().get("detail")
    return isinstance(detail, str) and len(detail) > 20 and " " in detail


def plain_row(plane: ControlPlane, run: str) -> str:
    """Every column of the run's row, as text (to look for a secret in it)."""
    return json.dumps({k: str(v) for k, v in plane.row(run)._mapping.items()})


def test_claim_renew_finish_happy_path(plane):
    worker = plane.worker()
    data = b"a,b\n1,2\n"
    run = plane.submit(env={"API_TOKEN": SECRET}, files={"job.py": b"print(1)\n", "data.csv": data})

    row = plane.row(run)
    assert SECRET not in plain_row(plane, run) and row.env == {} and row.env_keys == ["API_TOKEN"]
    assert row.env_sealed, "env values are stored sealed"
    assert worker.post(wire.HEARTBEAT).json() == {"worker_id": worker.id, "running": []}

    plane.dispatch(run, worker)
    r = worker.claim(run)
    assert r.status_code == 200, r.text
    claim = r.json()
    assert claim["attempt"] == 1 and claim["env"] == {"API_TOKEN": SECRET} and claim["script"] == "job.py"
    got = {i["name"]: httpx.get(i["url"]).content for i in claim["inputs"]}
    assert got == {"job.py": b"print(1)\n", "data.csv": data}
    assert all(i["sha256"] == hashlib.sha256(got[i["name"]]).hexdigest() for i in claim["inputs"])
    with plane.engine.connect() as conn:
        used = conn.execute(select(Blob.last_used_at).where(Blob.tenant_id == "tenant-a")).scalars().all()
    assert len(used) == 2 and all(used), "a claim marks the run's kept inputs used"
    assert worker.post(wire.HEARTBEAT).json()["running"] == [run]

    assert worker.renew(run, 1, b"hello from the script\n", stages={"running": 0.5}).json() == {"kept": True}
    fresh = worker.get(wire.INPUT_URL, id=run, attempt=1, name="data.csv")
    assert fresh.status_code == 200 and httpx.get(fresh.json()["url"]).content == data

    outputs = worker.upload(run, 1, {"result.txt": b"42\n", "sub/dir/more.bin": b"\x00\x01"})
    r = worker.finish(run, 1, outputs=outputs)
    assert r.status_code == 200 and r.json() == {"committed": True}
    again = worker.finish(run, 1, outputs=outputs)
    assert again.status_code == 200 and again.json() == {"committed": True}, "a lost answer is not taken for fencing"

    tenant = plane.tenant()
    view = plane.client.get(f"/v1/executions/{run}", headers=tenant).json()
    assert view["status"] == "succeeded" and view["env_keys"] == ["API_TOKEN"] and SECRET not in json.dumps(view)
    logs = plane.client.get(f"/v1/executions/{run}/logs", headers=tenant).json()
    assert b"".join(base64.b64decode(c["data_b64"]) for c in logs["chunks"]) == b"hello from the script\n"
    outs = plane.client.get(f"/v1/executions/{run}/outputs", headers=tenant).json()
    assert {o["path"]: httpx.get(o["url"]).content for o in outs} == {"result.txt": b"42\n", "sub/dir/more.bin": b"\x00\x01"}
    row = plane.row(run)
    assert row.env_sealed is None and row.env == {} and SECRET not in plain_row(plane, run)


def test_outputs_missing_from_the_store_are_not_committed(plane):
    worker = plane.worker()
    run, claim = plane.claimed(worker)
    never_put = [{"path": "out.txt", "size": 3, "sha256": "0" * 64}]
    r = worker.finish(run, 1, outputs=never_put)
    assert r.status_code == 400 and "out.txt was not uploaded" in r.json()["detail"] and is_sentence(r)
    assert plane.row(run).status == "running"
    uploaded = worker.upload(run, 1, {"out.txt": b"abc"})
    r = worker.finish(run, 1, outputs=[{**uploaded[0], "size": 5}])
    assert r.status_code == 400 and "holds 3 bytes, not 5" in r.json()["detail"]
    assert worker.finish(run, 1, outputs=uploaded).status_code == 200


def test_a_finish_carries_the_last_log_chunks_and_one_not_base64_commits_nothing(plane):
    worker = plane.worker()
    run, claim = plane.claimed(worker)
    r = worker.finish(run, 1, logs=[("stdout", "not base64!")])
    assert r.status_code == 400 and "not valid base64" in r.json()["detail"] and is_sentence(r)
    assert plane.row(run).status == "running"
    r = worker.finish(run, 1, logs=[("stdout", base64.b64encode(b"the last line\n").decode())])
    assert r.status_code == 200 and r.json() == {"committed": True}
    logs = plane.client.get(f"/v1/executions/{run}/logs", headers=plane.tenant()).json()
    assert [base64.b64decode(c["data_b64"]) for c in logs["chunks"]] == [b"the last line\n"]
    assert (plane.row(run).status, plane.row(run).log_bytes) == ("succeeded", len(b"the last line\n"))


def test_a_fenced_attempt_gets_409_and_its_uploaded_outputs_are_deleted(plane):
    worker = plane.worker()
    run, claim = plane.claimed(worker, env={"K": SECRET})
    outputs = worker.upload(run, 1, {"late.txt": b"too late"})
    assert plane.client.post(f"/v1/executions/{run}/cancel", headers=plane.tenant()).json()["status"] == "canceled"
    assert plane.row(run).env_sealed is None, "a canceled run's env values leave the database at once"

    for r in (worker.renew(run, 1, b"more"), worker.output_urls(run, 1, {"x": b"1"}),
              worker.get(wire.INPUT_URL, id=run, attempt=1, name="job.py"), worker.finish(run, 1, outputs=outputs)):
        assert r.status_code == 409 and "fenced" in r.json()["detail"] and is_sentence(r)
    assert plane.store.stat(f"executions/{run}/outputs/a1/late.txt") is None, "a refused attempt's files are deleted"
    assert plane.row(run).status == "canceled"


def test_a_finish_after_the_run_moved_on_keeps_the_new_attempts_files(plane):
    first, second = plane.worker(), plane.worker()
    run, _ = plane.claimed(first)
    stale = first.upload(run, 1, {"out.txt": b"first"})
    assert lifecycle.expire_leases(plane.engine, plane.row(run).heartbeat_at.replace(year=2100)) == [(run, "queued")]
    plane.dispatch(run, second)
    assert second.claim(run).json()["attempt"] == 2
    fresh = second.upload(run, 2, {"out.txt": b"second"})

    r = first.finish(run, 1, outputs=stale)
    assert r.status_code == 409 and "attempt 2" in r.json()["detail"]
    assert plane.store.stat(f"executions/{run}/outputs/a1/out.txt") is None
    assert second.finish(run, 2, outputs=fresh).status_code == 200
    r = second.finish(run, 2, status="failed", outputs=fresh)
    assert r.status_code == 409, "a different status for a committed attempt is no repeat"
    assert plane.store.stat(f"executions/{run}/outputs/a2/out.txt") is not None, "committed files are kept"


def test_only_an_active_worker_claims_and_only_what_was_dispatched_to_it(plane):
    worker, other = plane.worker(), plane.worker()
    run = plane.submit()
    r = worker.claim(run)
    assert r.status_code == 403 and "not dispatched to worker" in r.json()["detail"]
    plane.dispatch(run, other)
    assert worker.claim(run).status_code == 403
    assert worker.claim("ex-nonesuch").status_code == 404
    assert other.claim(run).status_code == 200
    assert other.renew(run, 1, b"started").status_code == 200  # (before any renew a repeat is answered again)
    r = other.claim(run)
    assert r.status_code == 409 and "not queued any more" in r.json()["detail"]

    booting = plane.worker(register=False)
    queued = plane.submit()
    plane.dispatch(queued, booting)
    r = booting.claim(queued)
    assert r.status_code == 403 and "not active" in r.json()["detail"] and plane.row(queued).status == "queued"


def test_a_draining_worker_finishes_its_runs_but_claims_none(plane):
    worker = plane.worker()
    run, _ = plane.claimed(worker)
    waiting = plane.submit()
    plane.dispatch(waiting, worker)
    assert records.retire_by_hand(plane.engine, worker.id) == WorkerState.DRAINING

    r = worker.claim(waiting)
    assert r.status_code == 403 and "draining" in r.json()["detail"] and plane.row(waiting).status == "queued"
    assert worker.post(wire.HEARTBEAT).json()["running"] == [run]
    assert worker.renew(run, 1, b"still going").status_code == 200
    assert worker.finish(run, 1).status_code == 200


@pytest.mark.parametrize("given_up", ["dead", "deleting", "deleted"])
def test_a_given_up_worker_is_refused_everything_and_its_token_revoked(plane, given_up):
    worker = plane.worker()
    run, _ = plane.claimed(worker)
    queued = plane.submit()
    plane.dispatch(queued, worker)
    if given_up == "dead":
        lifecycle.declare_dead(plane.engine, worker.id, "silent for too long")
    else:
        records.move(plane.engine, [worker.id], WorkerState.DELETING)
        if given_up == "deleted":
            records.record_servers(plane.engine, "local", [])
    with plane.engine.connect() as conn:
        state, revoked = conn.execute(select(Worker.state, Worker.token_revoked_at).where(Worker.id == worker.id)).one()
    assert state == given_up and revoked is not None

    for r in (worker.register(), worker.post(wire.HEARTBEAT), worker.claim(queued), worker.renew(run, 1, b"x"),
              worker.output_urls(run, 1, {"a": b"1"}), worker.get(wire.INPUT_URL, id=run, attempt=1, name="job.py"),
              worker.post(wire.DAMAGED_INPUT, id=run, attempt=1, name="job.py"), worker.finish(run, 1)):
        assert r.status_code == 403, r.text
        assert "no longer honoured" in r.json()["detail"] and "Take the worker down" in r.json()["detail"]
        assert r.json()["code"] == wire.GIVEN_UP  # the one refusal that takes a worker down


def test_a_revoked_token_is_refused_even_while_its_worker_looks_alive(plane):
    worker = plane.worker()
    with plane.engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == worker.id).values(token_revoked_at=Worker.created_at))
    r = worker.post(wire.HEARTBEAT)
    assert r.status_code == 403 and is_sentence(r) and r.json()["code"] == wire.GIVEN_UP


def test_tokens_and_api_keys_each_open_only_their_own_routes(plane):
    worker = plane.worker()
    run = plane.submit()
    tenant_key = plane.tenant()
    r = plane.client.post(wire.HEARTBEAT, headers=tenant_key)
    assert r.status_code == 401 and "worker token" in r.json()["detail"]
    assert "code" not in r.json()  # not a given-up refusal: a worker does not take itself down for it
    assert plane.client.post(wire.HEARTBEAT).status_code == 401
    for path in ("/v1/executions", f"/v1/executions/{run}"):
        r = plane.client.get(path, headers=worker.headers)
        assert r.status_code == 401 and "worker token" in r.json()["detail"]
    forged = worker.token[:-4] + "0000"
    r = plane.client.post(wire.HEARTBEAT, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "not issued" in r.json()["detail"]
    from rgrid_service.secrets import keys_for

    unknown = keys_for(plane.settings).worker_token("w-999")  # a valid MAC, but no worker record
    r = plane.client.post(wire.HEARTBEAT, headers={"Authorization": f"Bearer {unknown}"})
    assert r.status_code == 401 and "never issued" in r.json()["detail"]


def test_env_of_a_row_written_before_sealing_still_reaches_its_worker(plane):
    worker = plane.worker()
    run = "ex-legacy00001"
    with plane.engine.begin() as conn:
        if conn.execute(select(Tenant.id).where(Tenant.id == "tenant-a")).first() is None:
            conn.execute(insert(Tenant).values(id="tenant-a", name="a"))
        conn.execute(insert(Execution).values(id=run, tenant_id="tenant-a", status="queued", script="s.py", args=[],
                                              env={"OLD": "plain"}, env_keys=["OLD"], runtime="python:3.11",
                                              timeout_seconds=60, inputs=[]))
    plane.dispatch(run, worker)
    assert worker.claim(run).json()["env"] == {"OLD": "plain"}
    assert worker.finish(run, 1).status_code == 200
    assert plane.row(run).env == {}
    assert plane.client.get(f"/v1/executions/{run}", headers=plane.tenant()).json()["env_keys"] == ["OLD"]


def test_without_a_secret_key_no_worker_is_served_and_env_values_are_refused(db_url, seaweed):
    plane = ControlPlane(db_url, seaweed, secret_key=None)
    try:
        worker_id = records.request_workers(plane.engine, 1, "local", "local", "local", 2)[0]
        r = plane.client.post(wire.HEARTBEAT, headers={"Authorization": f"Bearer rgw_{worker_id}.{'0' * 64}"})
        assert r.status_code == 501 and "RGRID_SECRET_KEY" in r.json()["detail"]
        assert plane.submit(), "tenants' runs without env values are still served"
        r = plane.client.post("/v1/executions", headers=plane.tenant(), json={
            "script": "a.py", "env": {"K": "v"},
            "inputs": [{"name": "a.py", "size": 1, "sha256": "0" * 64, "md5": "f" * 32}]})
        assert r.status_code == 501 and "RGRID_SECRET_KEY" in r.json()["detail"]
    finally:
        plane.close()


def test_every_worker_route_documents_its_statuses(plane):
    paths = plane.client.get("/openapi.json").json()["paths"]
    for path in (wire.REGISTER, wire.HEARTBEAT, wire.CLAIM, wire.RENEW, wire.INPUT_URL, wire.DAMAGED_INPUT,
                 wire.OUTPUT_URLS, wire.FINISH, wire.RUNTIME_DIGESTS):
        (op,) = paths[path].values()
        assert {"200", "401", "503"} <= set(op["responses"]), path
    assert {"403", "404", "409"} <= set(paths[wire.CLAIM]["post"]["responses"])
    assert {"400", "403", "404", "409"} <= set(paths[wire.FINISH]["post"]["responses"])


def test_a_claim_whose_answer_was_lost_is_answered_again_until_the_attempt_does_something(plane):
    """A 504 or a read timeout after the claim committed: the worker asks again and gets the same
    attempt and spec (env included), not a 409 that strands the run until its lease expires. Once
    the attempt renewed, a repeat is refused as before, and never for another worker."""
    worker, other = plane.worker(), plane.worker()
    run, first = plane.claimed(worker, env={"GREETING": "hello"})
    again = worker.claim(run)
    assert again.status_code == 200, again.text
    assert again.json()["attempt"] == first["attempt"] == 1 and again.json()["env"] == {"GREETING": "hello"}
    assert again.json()["script"] == first["script"]
    with plane.engine.connect() as conn:
        attempts = conn.execute(select(ExecutionAttempt).where(ExecutionAttempt.execution_id == run)).all()
    assert len(attempts) == 1 and plane.row(run).attempt == 1, "no attempt burnt"
    assert other.claim(run).status_code == 403  # not dispatched to it
    assert worker.renew(run, 1, b"started").status_code == 200
    r = worker.claim(run)
    assert r.status_code == 409 and "not queued any more" in r.json()["detail"]


def test_registration_never_brings_a_given_up_worker_back(plane):
    """register_worker guards its UPDATE: a revoked token is refused, and a worker declared dead
    between the read and the write (PostgreSQL: the read takes no lock; the death is made to land
    right before the UPDATE) stays dead. SQLite's write transaction locks the database at BEGIN."""
    from sqlalchemy import event

    revoked = plane.worker()
    with plane.engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == revoked.id).values(token_revoked_at=Worker.created_at))
    assert lifecycle.register_worker(plane.engine, revoked.id, "local", 2) is False

    worker = plane.worker()
    if plane.engine.dialect.name != "postgresql":
        assert lifecycle.register_worker(plane.engine, worker.id, "local", 2) is True
        return
    fired = []

    def dead_meanwhile(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE WORKERS SET STATE") and not fired:
            fired.append(statement)
            lifecycle.declare_dead(plane.engine, worker.id, "silent for too long")

    event.listen(plane.engine, "before_cursor_execute", dead_meanwhile)
    try:
        assert lifecycle.register_worker(plane.engine, worker.id, "local", 2) is False
    finally:
        event.remove(plane.engine, "before_cursor_execute", dead_meanwhile)
    assert fired
    with plane.engine.connect() as conn:
        assert conn.execute(select(Worker.state).where(Worker.id == worker.id)).scalar() == WorkerState.DEAD
    r = worker.register()
    assert r.status_code == 403 and r.json()["code"] == wire.GIVEN_UP


def test_a_worker_reports_its_runtime_images_and_rgrid_runtimes_adds_them_up(plane):
    """Registration carries the images a worker holds (or that it has no Docker); GET /v1/runtimes
    counts, per runtime, the active workers that can run it, with the ids of those that cannot."""
    from rgrid_core.runtimes import CATALOGUE

    full, partial, bare = plane.worker(register=False), plane.worker(register=False), plane.worker(register=False)
    held = [{"runtime": n, "tag": r.tag, "size_bytes": 1000 + i} for i, (n, r) in enumerate(CATALOGUE.items())]
    for worker, body in ((full, {"docker": True, "images": held}),
                         (partial, {"docker": True, "images": [i for i in held if i["runtime"] == "python:3.11"]}),
                         (bare, {})):
        r = worker.post(wire.REGISTER, {"slots": 2, "provider": "local", **body})
        assert r.status_code == 200, r.text
    lifecycle.declare_dead(plane.engine, bare.id, "gone")  # no longer active: not counted
    r = plane.client.get("/v1/runtimes", headers=plane.tenant())
    assert r.status_code == 200, r.text
    views = {v["name"]: v for v in r.json()["runtimes"]}
    assert list(views) == list(CATALOGUE)
    assert views["python:3.11"]["workers_ready"] == 2 and views["python:3.11"]["workers_active"] == 2
    assert views["node:20"]["workers_ready"] == 1 and views["node:20"]["workers_missing"] == [partial.id]
    assert views["node:20"]["size_bytes"] == next(i["size_bytes"] for i in held if i["runtime"] == "node:20")
    assert plane.client.get("/v1/runtimes").status_code == 401


def test_workers_get_the_runtime_images_digests_before_the_pull_and_with_each_claim(plane, tmp_path):
    """The builder's digests file (RGRID_IMAGE_DIGESTS_FILE) reaches a worker twice: the node reads
    them all before it pulls, and each claim names its runtime's. No file: none, and the worker
    refuses the Docker runtimes (rgrid_runner.container.ensure_image)."""
    from rgrid_core import imagedigests
    from rgrid_core.runtimes import CATALOGUE

    worker = plane.worker()
    assert worker.get(wire.RUNTIME_DIGESTS).json() == {"digests": {}}
    run = plane.submit()
    plane.dispatch(run, worker)
    assert worker.claim(run).json()["image_digest"] is None

    digest = "sha256:" + hashlib.sha256(b"the built image").hexdigest()
    py = CATALOGUE["python:3.11"]
    imagedigests.write(tmp_path / "digests.json", {"python:3.11": {"repository": py.repository, "tag": py.tag,
                                                                   "digest": digest}})
    plane.settings.image_digests_file = str(tmp_path / "digests.json")
    assert worker.get(wire.RUNTIME_DIGESTS).json() == {"digests": {"python:3.11": digest}}
    run = plane.submit()
    plane.dispatch(run, worker)
    assert worker.claim(run).json()["image_digest"] == digest
    # Like every worker route, it needs a worker token.
    assert plane.client.get(wire.RUNTIME_DIGESTS).status_code == 401

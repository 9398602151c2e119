"""Batch endpoints on both databases: cancel every unfinished execution of a batch in one request."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth, lifecycle
from rgrid_service.db.models import Execution, ExecutionAttempt
from tests.db.test_db_auth_api import bearer, is_sentence


def statuses(engine, *ids) -> list[str]:
    with engine.connect() as conn:
        found = dict(conn.execute(select(Execution.id, Execution.status).where(Execution.id.in_(ids))).all())
    return [found[i] for i in ids]


def attempt_rows(engine, execution_id):
    with engine.connect() as conn:
        return conn.execute(
            select(ExecutionAttempt.attempt, ExecutionAttempt.outcome, ExecutionAttempt.finished_at)
            .where(ExecutionAttempt.execution_id == execution_id).order_by(ExecutionAttempt.attempt)
        ).all()


def test_batch_cancel_cancels_every_unfinished_execution_of_the_batch(api, engine, make_execution):
    batch = dict(batch_id="b-1")
    uploading = make_execution(S.UPLOADING, **batch)
    queued = make_execution(S.QUEUED, **batch)
    running = make_execution(S.QUEUED, **batch)
    requeued = make_execution(S.QUEUED, **batch)  # its first attempt was lost; queued again
    done = make_execution(S.SUCCEEDED, **batch)
    other_batch = make_execution(S.QUEUED, batch_id="b-2")
    other_tenant = make_execution(S.QUEUED, tenant_id="tenant-b", **batch)
    key_a = auth.create_key(engine, "tenant-a")
    key_b = auth.create_key(engine, "tenant-b")

    lost_lease, _ = lifecycle.claim_run(engine, requeued, "w-1")
    with engine.connect() as conn:
        later = lifecycle.db_now(conn) + timedelta(days=1)
    assert lifecycle.expire_leases(engine, later) == [(requeued, S.QUEUED)]
    lease, _ = lifecycle.claim_run(engine, running, "w-1")

    r = api.post("/v1/batches/b-1/cancel", headers=bearer(key_a))
    assert r.status_code == 200, r.text
    assert r.json() == {"batch_id": "b-1", "canceled": 4, "counts": {S.CANCELED: 4, S.SUCCEEDED: 1},
                        "total": 5, "finished": True, "cost_eur": None}
    assert statuses(engine, uploading, queued, running, requeued, done) == [S.CANCELED] * 4 + [S.SUCCEEDED]
    with engine.connect() as conn:
        reasons = conn.execute(select(Execution.reason, Execution.finished_at)
                               .where(Execution.status == S.CANCELED)).all()
    assert {r.reason for r in reasons} == {"canceled by the user"} and all(r.finished_at for r in reasons)

    # The running attempt is closed as canceled, and its runner is fenced off at its next renew.
    [(n, outcome, finished_at)] = attempt_rows(engine, running)
    assert (n, outcome) == (1, S.CANCELED) and finished_at is not None
    assert lifecycle.renew(engine, lease, [("stdout", b"late")]) is False
    assert lifecycle.finish(engine, lease, S.SUCCEEDED, 0, None, []) is False
    # The attempt lost before the re-queue keeps its outcome.
    assert [a.outcome for a in attempt_rows(engine, requeued)] == [S.LOST]
    assert lifecycle.renew(engine, lost_lease) is False

    # Another batch and another tenant's batch of the same id are untouched.
    assert statuses(engine, other_batch, other_tenant) == [S.QUEUED, S.QUEUED]

    # Again: nothing left to cancel, the same counts.
    again = api.post("/v1/batches/b-1/cancel", headers=bearer(key_a)).json()
    assert again["canceled"] == 0 and again["counts"] == {S.CANCELED: 4, S.SUCCEEDED: 1}
    assert api.get("/v1/batches/b-1", headers=bearer(key_a)).json()["counts"] == again["counts"]

    # Tenant b's own b-1 is its own batch.
    r = api.post("/v1/batches/b-1/cancel", headers=bearer(key_b))
    assert r.status_code == 200 and r.json()["canceled"] == 1 and r.json()["total"] == 1
    assert statuses(engine, other_batch) == [S.QUEUED]


def test_batch_cancel_of_an_unknown_batch_is_404_with_a_sentence(api, engine, make_execution):
    make_execution(S.QUEUED, batch_id="b-mine")
    key_a = auth.create_key(engine, "tenant-a")
    key_b = auth.create_key(engine, "tenant-b")
    for key, batch_id in ((key_a, "b-none"), (key_b, "b-mine")):
        r = api.post(f"/v1/batches/{batch_id}/cancel", headers=bearer(key))
        assert r.status_code == 404, r.text
        assert is_sentence(r.json()["detail"]) and batch_id in r.json()["detail"]
    assert api.post("/v1/batches/b-mine/cancel").status_code == 401
    assert api.get("/v1/batches/b-mine", headers=bearer(key_a)).json()["counts"] == {S.QUEUED: 1}


@pytest.mark.parametrize("size", [250])
def test_batch_cancel_of_a_large_batch_is_one_request(api, engine, size):
    """Created through the bulk endpoint, canceled in one request."""
    key = auth.create_key(engine, "tenant-a")
    one = dict(script="s.py", batch_id="b-big",
               inputs=[dict(name="s.py", kind="file", size=1, sha256="0" * 64, md5="f" * 32)])
    assert api.post("/v1/executions/bulk", json={"executions": [one] * size}, headers=bearer(key)).status_code == 201
    r = api.post("/v1/batches/b-big/cancel", headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json() == {"batch_id": "b-big", "canceled": size, "counts": {S.CANCELED: size}, "total": size,
                        "finished": True, "cost_eur": None}

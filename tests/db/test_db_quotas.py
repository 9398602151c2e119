"""Per-tenant quotas on both databases: over a limit, create and bulk create answer 429 with a
sentence and create nothing; other tenants are not affected; `set-quota` overrides the defaults;
placement and the waiting sentence honour the limit of concurrent runs."""
from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth, lifecycle
from rgrid_service.api import progress
from rgrid_service.api.app import create_app
from rgrid_service.db.models import Blob, Execution, ExecutionOutput, TenantQuota
from rgrid_service.db.session import engine_for
from rgrid_service.orchestrator.snapshot import RayNode, dispatch_snapshot
from rgrid_service.policies.placement import place
from rgrid_service.settings import ServiceSettings
from tests.db.test_db_admin import invoke
from tests.db.test_db_auth_api import bearer, is_sentence

MIB = 1024 * 1024


def spec(content: str, size: int = 10) -> dict:
    return dict(name="s.py", kind="file", size=size, sha256=hashlib.sha256(content.encode()).hexdigest(),
                md5=hashlib.md5(content.encode()).hexdigest())


def one(content: str = "a", size: int = 10, **extra) -> dict:
    return dict(script="s.py", inputs=[spec(content, size)], **extra)


@pytest.fixture
def quota_api(db_url):
    """An API whose default quotas are small: 3 queued runs, 1 MiB stored."""
    settings = ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", quota_max_queued_runs=3,
                               quota_max_stored_bytes=MIB, quota_max_running_runs=0)
    app = create_app(settings)
    cached = engine_for(db_url)
    with TestClient(app) as client:
        yield client
    cached.dispose()


def count(engine, tenant="tenant-a") -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(Execution.tenant_id == tenant)).scalar_one()


def test_queued_runs_over_quota_are_refused_with_a_sentence_and_nothing_created(quota_api, engine, make_execution):
    make_execution(S.QUEUED)
    make_execution(S.UPLOADING)
    make_execution(S.SUCCEEDED)  # ended runs do not count
    make_execution(S.QUEUED, tenant_id="tenant-b")  # nor other tenants' runs
    key = auth.create_key(engine, "tenant-a")
    assert quota_api.post("/v1/executions", json=one(), headers=bearer(key)).status_code == 201

    r = quota_api.post("/v1/executions", json=one("b"), headers=bearer(key))
    assert r.status_code == 429, r.text
    detail = r.json()["detail"]
    assert is_sentence(detail)
    assert detail.startswith("Over your quota of 3 queued runs: you have 3 uploading or queued, and this run "
                             "would make 4. Nothing was created;")
    assert count(engine) == 4

    # Bulk: the whole request is refused, even though some would fit.
    key_c = auth.create_key(engine, "tenant-c")
    r = quota_api.post("/v1/executions/bulk", json={"executions": [one(str(i)) for i in range(4)]},
                       headers=bearer(key_c))
    assert r.status_code == 429 and "these 4 runs would make 4" in r.json()["detail"]
    assert count(engine, "tenant-c") == 0
    assert quota_api.post("/v1/executions/bulk", json={"executions": [one(str(i)) for i in range(3)]},
                          headers=bearer(key_c)).status_code == 201

    # Another tenant is not held back by this one's queue.
    key_b = auth.create_key(engine, "tenant-b")
    assert quota_api.post("/v1/executions", json=one(), headers=bearer(key_b)).status_code == 201

    # A canceled run frees its place.
    first = quota_api.get("/v1/executions", headers=bearer(key)).json()[0]["id"]
    quota_api.post(f"/v1/executions/{first}/cancel", headers=bearer(key))
    assert quota_api.post("/v1/executions", json=one("b"), headers=bearer(key)).status_code == 201


def test_stored_bytes_count_blobs_and_unexpired_outputs(quota_api, engine, make_execution):
    done = make_execution(S.SUCCEEDED)
    expired = make_execution(S.SUCCEEDED, files_expired_at=lifecycle.utcnow())
    key = auth.create_key(engine, "tenant-a")
    with engine.begin() as conn:
        conn.execute(insert(Blob).values(tenant_id="tenant-a", sha256="1" * 64, size=MIB // 2, md5="f" * 32,
                                         object_key="blobs/x/1"))
        conn.execute(insert(ExecutionOutput).values(execution_id=done, attempt=1, path="o", size=MIB // 4,
                                                    sha256="2" * 64, object_key="o"))
        conn.execute(insert(ExecutionOutput).values(execution_id=expired, attempt=1, path="o", size=10 * MIB,
                                                    sha256="3" * 64, object_key="o2"))
    # 3/4 MiB used; a quarter MiB more fits exactly, a byte more does not.
    r = quota_api.post("/v1/executions", json=one("a", MIB // 4), headers=bearer(key))
    assert r.status_code == 201
    pending = r.json()["id"]
    r = quota_api.post("/v1/executions", json=one("b", 1), headers=bearer(key))
    assert r.status_code == 429
    assert r.json()["detail"].startswith("Over your storage quota of 1 MiB: your inputs and outputs take 1 MiB, "
                                         "and this needs 1 byte more. Nothing was created;")
    assert count(engine) == 3
    # The upload of a run never queued counts (it sits on its staging key), canceled or not, until
    # retention deletes it.
    quota_api.post(f"/v1/executions/{pending}/cancel", headers=bearer(key))
    assert quota_api.post("/v1/executions", json=one("b", 1), headers=bearer(key)).status_code == 429
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == pending).values(files_expired_at=lifecycle.utcnow()))
    r = quota_api.post("/v1/executions", json=one("b", MIB // 4 + 1), headers=bearer(key))
    assert r.status_code == 429 and "take 768 KiB, and this needs 256 KiB more" in r.json()["detail"]
    # Content the tenant already holds needs no new bytes: it is not refused.
    with engine.begin() as conn:
        conn.execute(insert(Blob).values(tenant_id="tenant-a", sha256=spec("held")["sha256"], size=MIB // 4 + 1,
                                         md5=spec("held")["md5"], object_key="blobs/x/held"))
    r = quota_api.post("/v1/executions", json=one("held", MIB // 4 + 1), headers=bearer(key))
    assert r.status_code == 201 and r.json()["reused"] == ["s.py"]


def test_set_quota_overrides_the_defaults(quota_api, engine, db_url, monkeypatch):
    key = auth.create_key(engine, "tenant-a")
    done = invoke(monkeypatch, db_url, "set-quota", "tenant-a", "--queued", "1", "--running", "2", "--stored-gb", "2")
    assert done.exit_code == 0, done.output
    assert "Quota of tenant-a: queued 1, running 2, stored bytes 2147483648" in done.output
    with engine.connect() as conn:
        row = conn.execute(select(TenantQuota.max_queued_runs, TenantQuota.max_running_runs,
                                  TenantQuota.max_stored_bytes)).one()
    assert (row.max_queued_runs, row.max_running_runs, row.max_stored_bytes) == (1, 2, 2 * 1024 ** 3)
    # 2 MiB is over the default 1 MiB but within tenant-a's own 2 GiB; a second run is over its 1 queued.
    assert quota_api.post("/v1/executions", json=one("a", 2 * MIB), headers=bearer(key)).status_code == 201
    r = quota_api.post("/v1/executions", json=one("b"), headers=bearer(key))
    assert r.status_code == 429 and "quota of 1 queued runs" in r.json()["detail"]
    # Only what is given changes; --default drops the tenant's own limits.
    invoke(monkeypatch, db_url, "set-quota", "tenant-a", "--queued", "0")
    assert quota_api.post("/v1/executions", json=one("b"), headers=bearer(key)).status_code == 201
    with engine.connect() as conn:
        row = conn.execute(select(TenantQuota.max_queued_runs, TenantQuota.max_running_runs)).one()
    assert (row.max_queued_runs, row.max_running_runs) == (0, 2)
    done = invoke(monkeypatch, db_url, "set-quota", "tenant-a", "--default")
    assert done.exit_code == 0 and "Quota of tenant-a: defaults" in done.output
    unknown = invoke(monkeypatch, db_url, "set-quota", "nobody", "--queued", "1")
    assert unknown.exit_code != 0 and "No tenant 'nobody'" in unknown.output


def test_concurrent_runs_wait_at_the_tenants_limit(engine, make_execution):
    """Tenant a (limit 1) has one running: its queued runs are not even read for placement, so
    tenant b's runs behind them are placed; a's queued run says why it waits."""
    running = make_execution(S.QUEUED, queued_at=lifecycle.utcago(100))
    a_waits = [make_execution(S.QUEUED, queued_at=lifecycle.utcago(50 - i)) for i in range(3)]
    b_runs = [make_execution(S.QUEUED, tenant_id="tenant-b", queued_at=lifecycle.utcago(10 - i)) for i in range(2)]
    with engine.begin() as conn:
        conn.execute(insert(TenantQuota).values(tenant_id="tenant-a", max_running_runs=1))
    lifecycle.register_worker(engine, "w-1", "process", 4)
    assert lifecycle.claim_run(engine, running, "w-1") is not None
    nodes = {"w-1": RayNode("n1", True, 4)}
    with engine.connect() as conn:
        snap = dispatch_snapshot(conn, nodes, 60, 600, 0, 0.5)
    assert snap.tenant_limit == {"tenant-a": 1} and snap.tenant_busy == {"tenant-a": 1}
    assert [q.execution_id for q in snap.queued] == b_runs
    decisions = place(list(snap.queued), list(snap.workers), snap.batch_busy, 0, snap.tenant_busy, snap.tenant_limit)
    assert [e for e, _ in decisions] == b_runs

    with engine.connect() as conn:
        ex = conn.execute(select(Execution).where(Execution.id == a_waits[0])).one()
    w = progress.waiting_of(engine, ex)
    assert (w.kind, w.sentence) == ("quota", "Waiting: your limit of 1 concurrent run is reached")
    # A default limit from the settings applies to tenants without their own (tenant b: 2).
    with engine.connect() as conn:
        snap = dispatch_snapshot(conn, nodes, 60, 600, 0, 0.5, default_running_limit=2)
    assert snap.tenant_limit == {"tenant-a": 1, "tenant-b": 2}
    # Once a's run ends, its next queued run is placed again.
    lease = lifecycle.Lease(running, 1, "w-1")
    assert lifecycle.finish(engine, lease, S.SUCCEEDED, 0, None, [])
    with engine.connect() as conn:
        snap = dispatch_snapshot(conn, nodes, 60, 600, 0, 0.5)
    decisions = place(list(snap.queued), list(snap.workers), snap.batch_busy, 0, snap.tenant_busy, snap.tenant_limit)
    assert [e for e, _ in decisions] == [a_waits[0], *b_runs]


def test_runs_held_back_by_the_limit_ask_the_fleet_for_no_worker(engine, make_execution):
    from rgrid_service.orchestrator.snapshot import fleet_snapshot

    running = make_execution(S.QUEUED)
    for _ in range(3):
        make_execution(S.QUEUED)
    make_execution(S.QUEUED, tenant_id="tenant-b")
    lifecycle.register_worker(engine, "w-1", "process", 2)
    assert lifecycle.claim_run(engine, running, "w-1") is not None
    with engine.connect() as conn:
        assert fleet_snapshot(conn, "process").queued == 4
        assert fleet_snapshot(conn, "process", default_running_limit=2).queued == 2  # a: 1 of 3 may start
    with engine.begin() as conn:
        conn.execute(insert(TenantQuota).values(tenant_id="tenant-a", max_running_runs=1))
    with engine.connect() as conn:
        assert fleet_snapshot(conn, "process").queued == 1  # only b's


def test_a_multipart_input_over_quota_is_refused_before_the_store_is_asked(db_url, engine):
    """The store here is unreachable: a create that had to start a multipart upload would fail
    with a store error; refused by the quota first, it answers 429 with the sentence."""
    settings = ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", quota_max_stored_bytes=MIB,
                               multipart_threshold_bytes=MIB // 2)
    key = auth.create_key(engine, "tenant-a")
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/executions", json=one("big", 2 * MIB), headers=bearer(key))
    engine_for(db_url).dispose()
    assert r.status_code == 429 and "storage quota of 1 MiB" in r.json()["detail"]
    assert count(engine) == 0


def test_the_same_new_content_in_many_runs_of_a_bulk_create_counts_once_per_run(quota_api, engine):
    """Each run gets its own staging key for it, so each upload counts (as stored_bytes does)."""
    key = auth.create_key(engine, "tenant-a")
    r = quota_api.post("/v1/executions/bulk", json={"executions": [one("same", MIB // 2) for _ in range(3)]},
                       headers=bearer(key))
    assert r.status_code == 429 and "storage quota of 1 MiB" in r.json()["detail"], r.text
    assert count(engine) == 0
    assert quota_api.post("/v1/executions/bulk", json={"executions": [one("same", MIB // 2) for _ in range(2)]},
                          headers=bearer(key)).status_code == 201


def test_a_create_waits_for_another_create_of_its_tenant_and_sees_its_runs(quota_api, engine, make_execution):
    """Two creates at once cannot both pass a limit: the second checks only after the first's
    transaction ended (the tenant's row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    import threading
    import time

    from rgrid_service.api import quotas
    from rgrid_service.db.session import write_tx

    make_execution(S.QUEUED)
    make_execution(S.QUEUED)  # 2 of 3
    key = auth.create_key(engine, "tenant-a")
    settings = ServiceSettings(database_url="x", quota_max_queued_runs=3)
    answers = []
    with write_tx(engine) as conn:  # another create, between its check and its commit
        quotas.check(conn, settings, "tenant-a", 1, 0)
        conn.execute(insert(Execution).values(id="ex-other", tenant_id="tenant-a", status=S.QUEUED, script="s.py",
                                              args=[], env={}, runtime="python:3.11", timeout_seconds=60, inputs=[]))
        second = threading.Thread(target=lambda: answers.append(
            quota_api.post("/v1/executions", json=one("b"), headers=bearer(key))))
        second.start()
        time.sleep(0.5)  # the second create reaches its check meanwhile (or, without a lock, passes it)
    second.join(30)
    assert answers[0].status_code == 429, answers[0].text
    assert "would make 4" in answers[0].json()["detail"]
    assert count(engine) == 3

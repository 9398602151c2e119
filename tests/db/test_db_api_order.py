"""Listing order: newest created first, reliably, even for executions made by one bulk create
(they share created_at on PostgreSQL, whose clock is the transaction's start). Both databases."""
from __future__ import annotations

from datetime import datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, Table, insert, select

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth
from rgrid_service.db.models import Execution, Tenant
from rgrid_service.db.session import MIGRATIONS_DIR
from tests.db.test_db_auth_api import bearer, body


def test_list_returns_the_newest_first_within_one_bulk_create(api, engine):
    key = auth.create_key(engine, "tenant-a")
    api.post("/v1/executions", json=body(batch_id="b-o"), headers=bearer(key))  # an older one
    many = [body(args=[str(n)], batch_id="b-o") for n in range(5)]
    r = api.post("/v1/executions/bulk", json={"executions": many}, headers=bearer(key))
    assert r.status_code == 201, r.text
    created = [c["id"] for c in r.json()["created"]]

    newest = api.get("/v1/executions", params={"batch": "b-o", "limit": 3}, headers=bearer(key)).json()
    assert [e["id"] for e in newest] == created[:1:-1]  # the last 3 created, newest first
    assert [e["args"] for e in newest] == [["4"], ["3"], ["2"]]
    every = api.get("/v1/executions", params={"batch": "b-o"}, headers=bearer(key)).json()
    assert [e["id"] for e in every][:5] == created[::-1] and len(every) == 6

    # A later execution outside the batch comes first in the tenant's whole listing.
    later = api.post("/v1/executions", json=body(), headers=bearer(key)).json()["id"]
    assert [e["id"] for e in api.get("/v1/executions", params={"limit": 2}, headers=bearer(key)).json()] == \
        [later, created[-1]]


def test_seq_is_unique_and_increasing_for_every_kind_of_insert(engine, make_execution):
    singles = [make_execution(S.QUEUED) for _ in range(3)]
    many = [f"ex-many{n}" for n in range(3)]
    with engine.begin() as conn:  # one executemany: still one number per row
        conn.execute(insert(Execution), [
            dict(id=i, tenant_id="tenant-a", status=S.QUEUED, script="s.py", runtime="python:3.11",
                 timeout_seconds=60) for i in many
        ])
    with engine.connect() as conn:
        seqs = dict(conn.execute(select(Execution.id, Execution.seq)).all())
    ordered = [seqs[i] for i in singles + many]
    assert ordered == sorted(set(ordered)), ordered


def test_migration_numbers_existing_executions_in_their_old_listing_order(db_url, engine):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db_url)
    command.downgrade(cfg, "0004")
    before_seq = Table("executions", MetaData(),
                       *[c._copy() for c in Execution.__table__.columns if c.name != "seq"])
    t0, t1 = datetime(2026, 11, 29, 10, 0, 0), datetime(2026, 11, 29, 10, 0, 1)
    rows = [("ex-c", t1), ("ex-b", t1), ("ex-z", t0), ("ex-a", t1)]
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id="tenant-a", name="tenant-a"))
        for ex_id, at in rows:
            conn.execute(insert(before_seq).values(
                id=ex_id, tenant_id="tenant-a", status=S.QUEUED, script="s.py", args=[], env={},
                runtime="python:3.11", timeout_seconds=60, inputs=[], attempt=0, max_attempts=3,
                log_bytes=0, log_truncated=False, created_at=at))
    engine.dispose()  # PostgreSQL: no cached plan of the old table shape

    command.upgrade(cfg, "head")
    with engine.begin() as conn:
        conn.execute(insert(Execution).values(id="ex-new", tenant_id="tenant-a", status=S.QUEUED,
                                              script="s.py", runtime="python:3.11", timeout_seconds=60))
        order = conn.execute(select(Execution.id, Execution.seq).order_by(Execution.seq)).all()
    assert order == [("ex-z", 1), ("ex-a", 2), ("ex-b", 3), ("ex-c", 4), ("ex-new", 5)]

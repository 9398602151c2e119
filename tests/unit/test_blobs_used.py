"""A claim marks the kept blobs its run reads as used (lifecycle._mark_blobs_used): one key by
equality, several by IN; only that tenant's records of those keys, on a SQLite file."""
from __future__ import annotations

from sqlalchemy import insert, select

from rgrid_service import lifecycle
from rgrid_service.db.models import Blob, Tenant
from rgrid_service.db.session import make_engine, upgrade_schema


def test_a_claim_marks_exactly_the_tenants_blobs_its_run_reads(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        for tenant in ("a", "b"):
            conn.execute(insert(Tenant).values(id=tenant, name=tenant))
            for sha in ("1", "2", "3"):
                conn.execute(insert(Blob).values(tenant_id=tenant, sha256=sha, size=1, md5="0" * 32,
                                                 object_key=f"blobs/{tenant}/{sha}"))

    def used() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(select(Blob.object_key).where(Blob.last_used_at.is_not(None))).scalars())

    with engine.begin() as conn:
        lifecycle._mark_blobs_used(conn, "a", [{"name": "s.py", "object_key": "blobs/a/1"},
                                               {"name": "old", "object_key": "executions/x/inputs/old"}])
    assert used() == {"blobs/a/1"}
    with engine.begin() as conn:
        lifecycle._mark_blobs_used(conn, "a", [{"name": "s.py", "object_key": "blobs/a/2"},
                                               {"name": "d.csv", "object_key": "blobs/a/3"},
                                               {"name": "theirs", "object_key": "blobs/b/1"}])
        lifecycle._mark_blobs_used(conn, "b", [])
    assert used() == {"blobs/a/1", "blobs/a/2", "blobs/a/3"}
    engine.dispose()

"""API timestamps: ISO 8601 in UTC with the time zone and the fraction, on both databases."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, text, update

from rgrid_core.states import ExecutionStatus as S
from rgrid_service import auth, lifecycle
from rgrid_service.db.clock import utcnow
from rgrid_service.db.models import Execution
from tests.db.test_db_auth_api import bearer, body

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def parsed(value: str) -> datetime:
    assert ISO_UTC.match(value), value
    stamp = datetime.fromisoformat(value)
    assert stamp.utcoffset() == timedelta(0)
    return stamp


def test_every_timestamp_in_a_response_is_utc_with_zone_and_fraction(api, engine):
    key = auth.create_key(engine, "tenant-a")
    ex_id = api.post("/v1/executions", json=body(batch_id="b-t"), headers=bearer(key)).json()["id"]

    # Stored as naive UTC; created_at has sub-second precision on SQLite too (CURRENT_TIMESTAMP
    # would have whole seconds).
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT created_at FROM executions WHERE id = :i"), {"i": ex_id}).scalar_one()
        stored = conn.execute(select(Execution.created_at).where(Execution.id == ex_id)).scalar_one()
    if isinstance(raw, str):  # SQLite keeps the text it was given
        assert re.search(r"\d\d:\d\d:\d\d\.\d{3}", raw), raw
    assert stored.tzinfo is None
    created = parsed(api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()["created_at"])
    assert created == stored.replace(tzinfo=timezone.utc)
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=5), created  # UTC, not local

    # Queued, claimed, canceled: every timestamp of the execution and its attempt.
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex_id).values(status=S.QUEUED, queued_at=utcnow()))
    lifecycle.claim_run(engine, ex_id, "w-1")
    canceled = api.post(f"/v1/executions/{ex_id}/cancel", headers=bearer(key)).json()
    assert canceled["status"] == S.CANCELED
    shown = api.get(f"/v1/executions/{ex_id}", headers=bearer(key)).json()
    stamps = [parsed(shown[k]) for k in ("created_at", "queued_at", "started_at", "finished_at")]
    assert stamps == sorted(stamps)
    [attempt] = shown["attempts"]
    assert parsed(attempt["started_at"]) <= parsed(attempt["finished_at"])
    [listed] = api.get("/v1/executions", params={"batch": "b-t"}, headers=bearer(key)).json()
    assert all(listed[k] == shown[k] for k in ("created_at", "queued_at", "started_at", "finished_at"))

    # Workers' timestamps too.
    lifecycle.register_worker(engine, "w-1", "local", 2)
    operator = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    [worker] = api.get("/v1/cluster", headers=bearer(operator)).json()["workers"]
    assert abs(parsed(worker["created_at"]) - parsed(worker["last_heartbeat_at"])) < timedelta(minutes=1)

    # The schema still calls them date-times.
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ExecutionView"]["properties"]["created_at"]["anyOf"][0] == {"type": "string", "format": "date-time"}

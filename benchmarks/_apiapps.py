"""The two reference apps benchmarks/api_load.py measures RGrid's read path against, both served
by the same uvicorn (uvloop, httptools) as the grid's API:

- minimal_app: FastAPI with one sync route answering a fixed execution: the stack's ceiling.
- same_stack_app: FastAPI + SQLAlchemy Core on RGrid's own database file, doing a read's work by
  hand: the API key's hash looked up, the tenant's execution by id and its attempts (or its log
  chunks after a cursor), answered as JSON. What RGrid's read should cost on this stack.

Both read RGRID_DATABASE_URL (same_stack_app) and RGRID_BENCH_EXECUTION_JSON (minimal_app) from
the environment, since uvicorn builds them with --factory.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os

from fastapi import FastAPI, Header, HTTPException


def minimal_app() -> FastAPI:
    app = FastAPI()
    fixed = json.loads(os.environ["RGRID_BENCH_EXECUTION_JSON"])

    @app.get("/v1/executions/{execution_id}")
    def get_execution(execution_id: str):
        return fixed

    return app


def same_stack_app() -> FastAPI:
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["RGRID_DATABASE_URL"])
    app = FastAPI()

    def tenant_of(authorization: str | None) -> str:
        key = (authorization or "").removeprefix("Bearer ")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT tenant_id FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
                               {"h": hashlib.sha256(key.encode()).hexdigest()}).first()
        if row is None:
            raise HTTPException(401, "bad key")
        return row.tenant_id

    @app.get("/v1/executions/{execution_id}")
    def get_execution(execution_id: str, authorization: str | None = Header(None)):
        tenant = tenant_of(authorization)
        with engine.connect() as conn:
            ex = conn.execute(text("SELECT * FROM executions WHERE id = :id AND tenant_id = :t"),
                              {"id": execution_id, "t": tenant}).mappings().first()
            if ex is None:
                raise HTTPException(404, "no such execution")
            attempts = conn.execute(text("SELECT * FROM execution_attempts WHERE execution_id = :id ORDER BY attempt"),
                                    {"id": execution_id}).mappings().all()
        out = {k: v for k, v in ex.items() if k not in ("env", "env_sealed")}
        out["attempts"] = [dict(a) for a in attempts]
        return out

    @app.get("/v1/executions/{execution_id}/logs")
    def get_logs(execution_id: str, after: int = 0, limit: int = 1000, authorization: str | None = Header(None)):
        tenant = tenant_of(authorization)
        with engine.connect() as conn:
            ex = conn.execute(text("SELECT status FROM executions WHERE id = :id AND tenant_id = :t"),
                              {"id": execution_id, "t": tenant}).first()
            if ex is None:
                raise HTTPException(404, "no such execution")
            rows = conn.execute(text("SELECT id, attempt, stream, data FROM log_chunks WHERE execution_id = :id "
                                     "AND id > :after ORDER BY id LIMIT :limit"),
                                {"id": execution_id, "after": after, "limit": limit}).all()
        return {"chunks": [{"id": r.id, "attempt": r.attempt, "stream": r.stream,
                            "data_b64": base64.b64encode(r.data).decode()} for r in rows],
                "next_after": rows[-1].id if rows else after, "status": ex.status}

    return app


def counted_rgrid_app() -> FastAPI:
    """RGrid's API with a count of the SQL statements its engine runs, at GET /bench/statements
    (for the follow benchmark: the database reads its followers cause). The count is one integer
    bumped per statement by SQLAlchemy's before_cursor_execute event."""
    from sqlalchemy import event

    from rgrid_service.api.app import create_app

    app = create_app()
    count = [0]

    @event.listens_for(app.state.engine, "before_cursor_execute")
    def _count(*_args):
        count[0] += 1

    @app.get("/bench/statements", include_in_schema=False)
    async def statements():
        return {"statements": count[0]}

    return app

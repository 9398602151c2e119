from __future__ import annotations

from fastapi import APIRouter

from ... import lifecycle
from ..deps import EngineDep

router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health(engine: EngineDep):
    """Whether the API can reach its database (no API key needed)."""
    with engine.connect() as conn:
        lifecycle.db_now(conn)
    return {"status": "ok"}

from __future__ import annotations

from fastapi import APIRouter

from ... import lifecycle
from ..deps import EngineDep
from ..errors import PUBLIC, responses
from ..schemas import Health

router = APIRouter(tags=["health"], responses=responses(*PUBLIC))


@router.get("/v1/health", response_model=Health)
def health(engine: EngineDep):
    """Whether the API can reach its database (no API key needed)."""
    with engine.connect() as conn:
        lifecycle.db_now(conn)
    return {"status": "ok"}

"""`GET /metrics`: Prometheus text format (operator: queue depth and worker counts cover every tenant)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import OperatorDep
from ..errors import OPERATOR, responses
from ..metrics import scrape

router = APIRouter(tags=["metrics"], responses=responses(*OPERATOR))

PROMETHEUS_TEXT = {200: {"description": "Prometheus text format.",
                         "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}}


@router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
def metrics(request: Request, _operator: OperatorDep):
    """Queue depth, runs by status not yet ended, workers by state (docs/architecture.md, Metrics)."""
    return Response(scrape(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)

from __future__ import annotations

from fastapi import APIRouter

from .. import runtimes as runtime_views
from .. import schemas
from ..deps import CallerDep, EngineDep
from ..errors import KEYED, responses

router = APIRouter(tags=["runtimes"], responses=responses(*KEYED))


@router.get("/v1/runtimes", response_model=schemas.RuntimesView)
def runtimes(engine: EngineDep, _caller: CallerDep):
    """The runtimes `--runtime` takes: what each holds, its image's tag and size, and how many of
    the active workers can run it now (they hold its image; bubblewrap for python:3.11 on a worker
    without Docker)."""
    return runtime_views.runtimes(engine)

"""`GET /v1/runtimes`: the runtime catalogue and whether every active worker can run each runtime,
from what the workers said at registration (the images they hold, or that they have no Docker)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME, Runtime
from rgrid_core.states import WorkerState

from ..db.models import Worker
from . import schemas


def can_run(runtime: Runtime, images: list[dict] | None) -> bool:
    """Whether a worker that registered with these images (None: no Docker) runs this runtime
    without waiting for a pull."""
    if images is None:
        return runtime.sandbox
    return any(i.get("runtime") == runtime.name and i.get("tag") == runtime.tag for i in images)


def runtime_views(workers: list[tuple[str, list[dict] | None]]) -> list[schemas.RuntimeView]:
    """The catalogue against (worker id, images) of the active workers."""
    views = []
    for runtime in CATALOGUE.values():
        sizes = [i["size_bytes"] for _, images in workers for i in images or ()
                 if i.get("runtime") == runtime.name and i.get("tag") == runtime.tag]
        missing = [wid for wid, images in workers if not can_run(runtime, images)]
        views.append(schemas.RuntimeView(
            name=runtime.name, contents=runtime.contents, default=runtime.name == DEFAULT_RUNTIME,
            runs_in=runtime.runs_in, debian_suite=runtime.suite, packages=list(runtime.packages),
            image_tag=runtime.tag, size_bytes=max(sizes) if sizes else None,
            workers_ready=len(workers) - len(missing), workers_active=len(workers), workers_missing=missing))
    return views


def runtimes(engine: Engine) -> schemas.RuntimesView:
    with engine.connect() as conn:
        rows = conn.execute(select(Worker.id, Worker.runtime_images).where(Worker.state == WorkerState.ACTIVE)
                            .order_by(Worker.id)).all()
    return schemas.RuntimesView(runtimes=runtime_views([(r.id, r.runtime_images) for r in rows]))

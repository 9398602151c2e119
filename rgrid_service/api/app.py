"""FastAPI control plane: executions, their inputs, logs and outputs, per tenant."""
from __future__ import annotations

import base64
import secrets

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from rgrid_core.names import input_name_problem
from rgrid_core.runtimes import SUPPORTED_RUNTIMES

from .. import lifecycle
from ..auth import tenant_for_key
from ..db.clock import utcnow
from ..db.models import Blob, Execution, ExecutionAttempt, ExecutionOutput, LogChunk, Worker, WorkerHeartbeat
from rgrid_core.states import TERMINAL, ExecutionStatus, WorkerState
from ..db.session import engine_for, write_tx
from ..settings import ServiceSettings, get_settings
from ..storage import ObjectStore, blob_key
from . import schemas

ENV_KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
LOG_PAGE_BYTES = 4 * 1024 * 1024


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = engine_for(settings.database_url)
    store = ObjectStore(settings)
    app = FastAPI(
        title="RGrid control plane",
        version="1",
        description="Run ordinary scripts on an elastic grid. Every endpoint but /v1/health needs "
        "`Authorization: Bearer <API key>`.",
    )
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(DBAPIError)
    async def database_away(_request: Request, exc: DBAPIError):
        # Only "cannot talk to the database" becomes a 503; anything else is a real bug.
        if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
            raise exc
        return JSONResponse(
            status_code=503,
            content={"detail": "The database is not reachable right now. Nothing was lost; try again in a few seconds."},
            headers={"Retry-After": "5"},
        )

    def tenant(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        if creds is None or not creds.credentials:
            raise HTTPException(401, "An API key is required: send 'Authorization: Bearer <key>' (the CLI reads it from RGRID_API_KEY).")
        found = tenant_for_key(engine, creds.credentials)
        if found is None:
            raise HTTPException(401, "That API key is not valid. Check RGRID_API_KEY or ask for a new key.")
        return found

    def owned(execution_id: str, tenant_id: str) -> Execution:
        with Session(engine) as session:
            ex = session.scalars(
                select(Execution).where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
            ).first()
        if ex is None:
            raise HTTPException(404, f"No execution {execution_id!r} for this API key. `rgrid list` shows yours.")
        return ex

    def view(ex, attempts=()) -> schemas.ExecutionView:
        return schemas.ExecutionView(
            id=ex.id, status=ex.status, script=ex.script, args=ex.args, env_keys=sorted(ex.env or {}),
            runtime=ex.runtime, timeout_seconds=ex.timeout_seconds,
            inputs=[{k: i[k] for k in ("name", "kind", "size")} for i in ex.inputs or []],
            batch_id=ex.batch_id, batch_parallel=ex.batch_parallel, attempt=ex.attempt, max_attempts=ex.max_attempts, worker_id=ex.worker_id,
            exit_code=ex.exit_code, reason=ex.reason, log_truncated=ex.log_truncated,
            created_at=ex.created_at, queued_at=ex.queued_at, started_at=ex.started_at,
            finished_at=ex.finished_at,
            attempts=[schemas.Attempt.model_validate(a, from_attributes=True) for a in attempts],
        )

    @app.get("/v1/cluster", response_model=schemas.ClusterView)
    def cluster(_tenant_id: str = Depends(tenant)):
        """The Ray dashboard address and the workers that are not deleted, with their heartbeats."""
        with engine.connect() as conn:
            rows = conn.execute(
                select(Worker.id, Worker.provider, Worker.state, Worker.slots, Worker.created_at,
                       Worker.dead_reason, WorkerHeartbeat.last_heartbeat_at, WorkerHeartbeat.running)
                .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
                .where(Worker.state != WorkerState.DELETED)
                .order_by(Worker.created_at, Worker.id)
            ).all()
        return schemas.ClusterView(
            ray_dashboard_url=settings.ray_dashboard_url,
            workers=[schemas.WorkerView(id=r.id, provider=r.provider, state=r.state, slots=r.slots,
                                        created_at=r.created_at, last_heartbeat_at=r.last_heartbeat_at,
                                        running=r.running or [], dead_reason=r.dead_reason) for r in rows],
        )

    @app.get("/v1/health")
    def health():
        with engine.connect() as conn:
            lifecycle.db_now(conn)
        return {"status": "ok"}

    def problem_with(body: schemas.CreateExecution) -> str | None:
        """What is wrong with a requested execution, as a sentence; None when it can be created."""
        names = [i.name for i in body.inputs]
        for name in names:
            problem = input_name_problem(name)
            if problem:
                return f"Input name {name!r} {problem}; rename the file and try again."
        if len(set(names)) != len(names):
            return "Two inputs have the same name; every input needs its own name."
        if body.script not in names:
            return f"The script {body.script!r} must be one of the uploaded inputs."
        if body.runtime not in SUPPORTED_RUNTIMES:
            return f"Unknown runtime {body.runtime!r}. Valid runtimes: {', '.join(SUPPORTED_RUNTIMES)}."
        for key, value in body.env.items():
            if not key or key[0].isdigit() or not set(key) <= ENV_KEY_CHARS:
                return f"Environment variable name {key!r} is not valid (letters, digits, _)."
            if "\x00" in value:
                return f"The value of {key} contains a NUL character, which no process can receive."
        if any("\x00" in a for a in body.args):
            return "An argument contains a NUL character, which no process can receive."
        if body.batch_parallel is not None and not body.batch_id:
            return "batch_parallel limits a batch: send it together with a batch_id."
        return None

    def create(tenant_id: str, bodies: list[schemas.CreateExecution]) -> list[schemas.Created]:
        """Insert the executions in one transaction: all of them or, on any error, none."""
        kept = kept_inputs(tenant_id, [i for b in bodies for i in b.inputs])
        rows, created = [], []
        for body in bodies:
            execution_id = "ex-" + secrets.token_hex(6)
            specs, uploads, reused = kept_or_to_upload(tenant_id, body.inputs, kept)
            queue_now = body.submit and not uploads
            rows.append(dict(
                id=execution_id, tenant_id=tenant_id, status=ExecutionStatus.QUEUED if queue_now else ExecutionStatus.UPLOADING,
                queued_at=utcnow() if queue_now else None, script=body.script,
                args=body.args, env=body.env, runtime=body.runtime,
                timeout_seconds=body.timeout_seconds or settings.default_timeout_seconds,
                inputs=specs, batch_id=body.batch_id,
                batch_parallel=body.batch_parallel, max_attempts=settings.max_attempts,
            ))
            created.append(schemas.Created(id=execution_id, status=rows[-1]["status"], uploads=uploads,
                                           reused=reused))
        with write_tx(engine) as conn:
            for row in rows:  # one statement per row: queued_at is a SQL expression
                conn.execute(insert(Execution).values(**row))
        return created

    @app.post("/v1/executions", response_model=schemas.Created, status_code=201)
    def create_execution(body: schemas.CreateExecution, tenant_id: str = Depends(tenant)):
        problem = problem_with(body)
        if problem:
            raise HTTPException(400, problem)
        return create(tenant_id, [body])[0]

    @app.post("/v1/executions/bulk", response_model=schemas.CreatedMany, status_code=201)
    def create_executions(body: schemas.CreateMany, tenant_id: str = Depends(tenant)):
        """Up to 1000 executions in one request and one transaction (a batch over many files):
        each is checked as POST /v1/executions checks one, and if any is wrong none is created."""
        for n, one in enumerate(body.executions):
            problem = problem_with(one)
            if problem:
                raise HTTPException(400, f"Execution {n + 1} of {len(body.executions)}: {problem} Nothing was created.")
        return schemas.CreatedMany(created=create(tenant_id, body.executions))

    def kept_inputs(tenant_id: str, inputs: list[schemas.InputSpec]) -> dict[tuple, str]:
        """(sha256, size, md5) -> object key of every one of these inputs this tenant already
        uploaded and had verified."""
        if not inputs:
            return {}
        with engine.connect() as conn:
            return {
                (b.sha256, b.size, b.md5): b.object_key
                for b in conn.execute(
                    select(Blob.sha256, Blob.size, Blob.md5, Blob.object_key)
                    .where(Blob.tenant_id == tenant_id, Blob.sha256.in_({i.sha256 for i in inputs}))
                )
            }

    def kept_or_to_upload(tenant_id: str, inputs: list[schemas.InputSpec], kept: dict[tuple, str]):
        """Each input's stored spec with its object key, the uploads still needed, and the names
        of inputs this tenant already uploaded with the same content (sha256, size and MD5)."""
        specs, uploads, reused = [], [], []
        for i in inputs:
            spec = i.model_dump()
            key = kept.get((i.sha256, i.size, i.md5))
            if key:
                reused.append(i.name)
            else:
                key = blob_key(tenant_id, i.sha256)
                spec["upload"] = True  # verified by submit, then kept
                uploads.append(schemas.Upload(name=i.name, url=store.presign_put(key)))
            spec["object_key"] = key
            specs.append(spec)
        return specs, uploads, reused

    @app.post("/v1/executions/{execution_id}/submit", response_model=schemas.ExecutionView)
    def submit_execution(execution_id: str, tenant_id: str = Depends(tenant)):
        ex = owned(execution_id, tenant_id)
        if ex.status != ExecutionStatus.UPLOADING:
            raise HTTPException(409, f"Execution {execution_id} was already submitted (it is {ex.status}).")
        problems = []
        uploaded = [spec for spec in ex.inputs if spec.get("upload")]
        for spec in uploaded:
            stat = store.stat(spec["object_key"])
            if stat is None:
                problems.append(f"{spec['name']} was not uploaded")
            elif stat.size != spec["size"]:
                problems.append(f"{spec['name']} arrived with {stat.size} bytes instead of {spec['size']}")
            elif stat.etag and "-" not in stat.etag and stat.etag.strip('"') != spec["md5"]:
                problems.append(f"{spec['name']} arrived with a different checksum")
        if problems:
            raise HTTPException(409, "Not queued: " + "; ".join(problems) + ". Upload again and resubmit.")
        lifecycle.submit(engine, execution_id, uploaded, tenant_id)
        return view(owned(execution_id, tenant_id))

    @app.get("/v1/executions", response_model=list[schemas.ExecutionView])
    def list_executions(
        tenant_id: str = Depends(tenant),
        status: str | None = None,
        batch: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ):
        q = select(Execution).where(Execution.tenant_id == tenant_id)
        if status:
            q = q.where(Execution.status == status)
        if batch:
            q = q.where(Execution.batch_id == batch)
        q = q.order_by(Execution.created_at.desc(), Execution.id.desc()).limit(limit)
        with Session(engine) as session:
            rows = session.scalars(q).all()
        return [view(r) for r in rows]

    @app.get("/v1/batches/{batch_id}", response_model=schemas.BatchView)
    def batch_summary(batch_id: str, tenant_id: str = Depends(tenant)):
        """A batch's executions counted per status: one small query, however large the batch, for
        progress displays that poll (listing a 10 000-run batch twice a second would not be)."""
        with engine.connect() as conn:
            counts = dict(conn.execute(
                select(Execution.status, func.count())
                .where(Execution.tenant_id == tenant_id, Execution.batch_id == batch_id)
                .group_by(Execution.status)
            ).all())
        if not counts:
            raise HTTPException(404, f"No executions in batch {batch_id!r} for this API key. `rgrid list` shows yours.")
        total = sum(counts.values())
        return schemas.BatchView(batch_id=batch_id, total=total, counts=counts,
                                 finished=sum(n for st, n in counts.items() if st in TERMINAL) == total)

    @app.get("/v1/executions/{execution_id}", response_model=schemas.ExecutionView)
    def get_execution(execution_id: str, tenant_id: str = Depends(tenant)):
        ex = owned(execution_id, tenant_id)
        with engine.connect() as conn:
            attempts = conn.execute(
                select(ExecutionAttempt.__table__)
                .where(ExecutionAttempt.execution_id == execution_id)
                .order_by(ExecutionAttempt.attempt)
            ).all()
        return view(ex, attempts)

    @app.post("/v1/executions/{execution_id}/cancel", response_model=schemas.ExecutionView)
    def cancel_execution(execution_id: str, tenant_id: str = Depends(tenant)):
        ex = owned(execution_id, tenant_id)
        if ex.status in TERMINAL:
            return view(ex)
        lifecycle.cancel(engine, execution_id)
        return view(owned(execution_id, tenant_id))

    @app.get("/v1/executions/{execution_id}/logs", response_model=schemas.LogPage)
    def get_logs(
        execution_id: str,
        tenant_id: str = Depends(tenant),
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(1000, ge=1, le=10_000),
    ):
        ex = owned(execution_id, tenant_id)
        with engine.connect() as conn:
            rows = conn.execute(
                select(LogChunk.id, LogChunk.attempt, LogChunk.stream, LogChunk.data)
                .where(LogChunk.execution_id == execution_id, LogChunk.id > after)
                .order_by(LogChunk.id)
                .limit(limit)
            ).all()
        chunks, size, next_after = [], 0, after
        for r in rows:
            if chunks and size + len(r.data) > LOG_PAGE_BYTES:
                break
            chunks.append(
                schemas.LogChunkView(id=r.id, attempt=r.attempt, stream=r.stream, data_b64=base64.b64encode(r.data).decode())
            )
            size += len(r.data)
            next_after = r.id
        # Finished only once the terminal status is seen *and* this page drained the log.
        finished = ex.status in TERMINAL and len(chunks) == len(rows) and len(rows) < limit
        return schemas.LogPage(chunks=chunks, next_after=next_after, status=ex.status, finished=finished)

    @app.get("/v1/executions/{execution_id}/outputs", response_model=list[schemas.OutputView])
    def get_outputs(execution_id: str, tenant_id: str = Depends(tenant)):
        owned(execution_id, tenant_id)
        with engine.connect() as conn:
            rows = conn.execute(
                select(ExecutionOutput.path, ExecutionOutput.size, ExecutionOutput.sha256, ExecutionOutput.object_key)
                .where(ExecutionOutput.execution_id == execution_id)
                .order_by(ExecutionOutput.path)
            ).all()
        return [
            schemas.OutputView(path=r.path, size=r.size, sha256=r.sha256, url=store.presign_get(r.object_key))
            for r in rows
        ]

    return app

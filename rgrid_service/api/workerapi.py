"""The worker API's rules: what a worker token may do, on which runs, and with which objects.

A worker's token speaks for one worker (rgrid_service.secrets); that worker acts only on the runs
dispatched to it (claim) and on its own attempts of them (everything after the claim), and every
object it touches goes through a presigned URL of exactly that object, made here. The statuses
are rgrid_core.workerwire's; each refusal is a sentence. Lifecycle writes stay in lifecycle.py:
this module decides who may call them and what a refused write means.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from rgrid_core import imagedigests
from rgrid_core import workerwire as wire
from rgrid_core.names import output_path_problem
from rgrid_core.states import WITH_OUTPUTS, ExecutionStatus, WorkerState

from .. import lifecycle
from ..db.models import Execution, ExecutionAttempt, Worker
from ..secrets import NO_SECRET_KEY, ControlPlaneKeys
from ..settings import ServiceSettings
from ..storage import ObjectStore, output_key
from .errors import Conflict, Forbidden, Invalid, NotConfigured, NotFound, ServiceError, Unauthorized, Unavailable

log = logging.getLogger("rgrid.workerapi")

NO_TOKEN = ("The worker API needs a worker token: send 'Authorization: Bearer rgw_…' (a worker reads it from "
            "RGRID_WORKER_TOKEN). API keys are not accepted here.")
BAD_TOKEN = ("That worker token was not issued by this control plane (or its RGRID_SECRET_KEY changed). "
             "The worker cannot act; replace it with a new one.")


@dataclass(frozen=True)
class TokenWorker:
    """The worker a valid token speaks for, as its record is now."""

    id: str
    state: str
    revoked: bool

    @property
    def given_up(self) -> bool:
        return self.revoked or self.state in lifecycle.GIVEN_UP


# --- who is calling ----------------------------------------------------------------------------


def token_worker_id(keys: ControlPlaneKeys | None, token: str | None) -> str:
    """The worker id a token names, checked by its MAC alone (no database read); 401 for anything
    else. Claim, renew and finish (every run's path) fold whether that worker may still act into
    their own conditional write, and read its record only to say why one was refused."""
    if not token or not token.startswith(wire.TOKEN_PREFIX):
        raise Unauthorized(NO_TOKEN)
    if keys is None:
        raise NotConfigured(NO_SECRET_KEY)
    worker_id = keys.token_worker(token)
    if worker_id is None:
        raise Unauthorized(BAD_TOKEN)
    return worker_id


def authenticate(engine: Engine, keys: ControlPlaneKeys | None, token: str | None) -> TokenWorker:
    """The worker a token was issued for (its record is the issuance); 401 for anything else."""
    return load_worker(engine, token_worker_id(keys, token))


def load_worker(engine: Engine, worker_id: str) -> TokenWorker:
    """The record of the worker a valid token names; 401 when none was ever created."""
    with engine.connect() as conn:
        row = conn.execute(select(Worker.state, Worker.token_revoked_at).where(Worker.id == worker_id)).first()
    if row is None:
        raise Unauthorized(f"No worker {worker_id} was ever created here, so its token was never issued. "
                           "Start workers through the fleet, which writes their record first.")
    return TokenWorker(worker_id, row.state, row.token_revoked_at is not None)


def given_up(worker: TokenWorker) -> Forbidden:
    return Forbidden(f"Worker {worker.id} is {worker.state} and its token is no longer honoured: the control plane "
                     "has given up on it and its runs. Take the worker down; a new worker comes up under a new id.",
                     code=wire.GIVEN_UP)


def require_alive(worker: TokenWorker) -> TokenWorker:
    if worker.given_up:
        raise given_up(worker)
    return worker


# --- the worker itself -------------------------------------------------------------------------


def register(engine: Engine, settings: ServiceSettings, worker: TokenWorker,
             body: wire.RegisterRequest) -> wire.RegisterResponse:
    images = [i.model_dump() for i in body.images] if body.docker else None
    if not lifecycle.register_worker(engine, worker.id, body.provider, body.slots, images):
        raise given_up(worker)
    return wire.RegisterResponse(worker_id=worker.id, heartbeat_interval_seconds=settings.heartbeat_interval_seconds)


def runtime_digests(settings: ServiceSettings) -> wire.RuntimeDigests:
    """The catalogue images' digests from the builder's file (RGRID_IMAGE_DIGESTS_FILE): what a
    worker pulls and checks before it runs any of them."""
    return wire.RuntimeDigests(digests=_published(settings))


def _published(settings: ServiceSettings) -> dict[str, str]:
    try:
        return imagedigests.published(settings.image_digests_file)
    except (OSError, ValueError) as e:
        log.error("the runtime images' digests cannot be read: %s", e)
        return {}  # workers refuse the Docker runtimes, each with a sentence, rather than run unchecked images


def heartbeat(engine: Engine, worker: TokenWorker) -> wire.HeartbeatResponse:
    running = lifecycle.heartbeat_running(engine, worker.id)
    if running is None:
        if worker.state in (WorkerState.REQUESTED, WorkerState.BOOTING):
            raise Conflict(f"Worker {worker.id} has not registered yet: register first, then send heartbeats.")
        raise given_up(worker)
    return wire.HeartbeatResponse(worker_id=worker.id, running=running)


# --- claim -------------------------------------------------------------------------------------


def _input_key(execution_id: str, spec: dict) -> str:
    # Executions created before inputs were kept by content read theirs from their own folder.
    return spec.get("object_key") or f"executions/{execution_id}/inputs/{spec['name']}"


def claim(engine: Engine, store: ObjectStore, keys: ControlPlaneKeys, worker_id: str,
          execution_id: str, settings: ServiceSettings | None = None) -> wire.ClaimResponse:
    """Take a run dispatched to this (active, unrevoked) worker, in one conditional write; on zero
    rows reads say why (401 no such worker, 403 given up, then _claim_refusal). The answer holds the
    env values, opened for this attempt only, and a presigned GET per input. A repeated claim (the
    first answer lost) is answered again while the attempt has done nothing yet
    (lifecycle.repeat_claim)."""
    claimed = lifecycle.claim_run(engine, execution_id, worker_id, dispatched=True)
    if claimed is None:
        require_alive(load_worker(engine, worker_id))
        claimed = lifecycle.repeat_claim(engine, execution_id, worker_id)
    if claimed is None:
        raise _claim_refusal(engine, execution_id, worker_id)
    lease, spec = claimed
    try:
        env = keys.open_env(spec.env_sealed) if spec.env_sealed else dict(spec.env or {})
    except ValueError as e:
        lifecycle.finish(engine, lease, ExecutionStatus.FAILED, None, str(e), [])
        raise Conflict(f"Run {execution_id} cannot start and was failed: {e}") from None
    inputs = [wire.InputSpec(name=i["name"], kind=i.get("kind", "file"), sha256=i["sha256"], size=int(i.get("size") or 0),
                             url=store.presign_worker_get(_input_key(execution_id, i))) for i in spec.inputs or ()]
    return wire.ClaimResponse(attempt=lease.attempt, script=spec.script, args=list(spec.args or ()), env=env,
                              runtime=spec.runtime, timeout_seconds=spec.timeout_seconds, inputs=inputs,
                              requirements=spec.requirements,
                              layer_scope=layer_scope(spec.tenant_id) if spec.requirements else None,
                              image_digest=_published(settings).get(spec.runtime) if settings else None)


def layer_scope(tenant_id: str) -> str:
    """The tenant's part of its requirements layers' names: a hash, so the registry's listing
    does not show tenant ids."""
    return hashlib.sha256(f"rgrid-requirements-layer:{tenant_id}".encode()).hexdigest()[:16]


def _claim_refusal(engine: Engine, execution_id: str, worker_id: str) -> ServiceError:
    with engine.connect() as conn:
        ex = conn.execute(select(Execution.status, Execution.dispatched_to).where(Execution.id == execution_id)).first()
        worker = conn.execute(select(Worker.state, Worker.token_revoked_at).where(Worker.id == worker_id)).first()
    if ex is None:
        return NotFound(f"No run {execution_id}; claim only the runs the control plane dispatched to you.")
    if worker is None or worker.state != WorkerState.ACTIVE or worker.token_revoked_at is not None:
        state = worker.state if worker else "unknown"
        return Forbidden(f"Worker {worker_id} is {state}, not active: it takes no new runs. Leave run {execution_id}; "
                         "it goes to another worker.")
    if ex.dispatched_to != worker_id:
        return Forbidden(f"Run {execution_id} is not dispatched to worker {worker_id}; claim only the runs dispatched "
                         "to you.")
    return Conflict(f"Run {execution_id} is not queued any more (it is {ex.status}); leave it.")


# --- an attempt's lease --------------------------------------------------------------------------


def _lease_refusal(conn: Connection, worker_id: str, execution_id: str, attempt: int) -> ServiceError | None:
    """Why this worker's attempt may not act on the run (None: the lease holds): 404 no such run,
    403 not this worker's attempt, 409 fenced (the run moved on without it)."""
    ex = conn.execute(select(Execution.status, Execution.attempt, Execution.worker_id)
                      .where(Execution.id == execution_id)).first()
    if ex is None:
        return NotFound(f"No run {execution_id}. Stop working on it.")
    owner = conn.execute(select(ExecutionAttempt.worker_id).where(ExecutionAttempt.execution_id == execution_id,
                                                                  ExecutionAttempt.attempt == attempt)).scalar()
    if owner != worker_id:
        return Forbidden(f"Attempt {attempt} of run {execution_id} is not worker {worker_id}'s; act only on the "
                         "attempts you claimed.")
    if ex.status != ExecutionStatus.RUNNING or ex.attempt != attempt or ex.worker_id != worker_id:
        now = f"attempt {ex.attempt} is {ex.status}" if ex.attempt != attempt else f"it is {ex.status}"
        return Conflict(f"Attempt {attempt} of run {execution_id} is fenced off ({now}): stop it and drop its "
                        "files; nothing more of it is taken.")
    return None


def _held(engine: Engine, worker: TokenWorker, execution_id: str, attempt: int):
    """The run (tenant, inputs) while this worker's attempt holds its lease; else the refusal."""
    with engine.connect() as conn:
        problem = _lease_refusal(conn, worker.id, execution_id, attempt)
        if problem:
            raise problem
        return conn.execute(select(Execution.tenant_id, Execution.inputs).where(Execution.id == execution_id)).first()


def _refused_after_write(engine: Engine, worker: TokenWorker, execution_id: str, attempt: int) -> ServiceError:
    with engine.connect() as conn:
        problem = _lease_refusal(conn, worker.id, execution_id, attempt)
    return problem or Conflict(f"Attempt {attempt} of run {execution_id} lost its lease just now; stop it.")


def renew(engine: Engine, worker_id: str, execution_id: str, attempt: int,
          body: wire.RenewRequest) -> wire.RenewResponse:
    """Keep the lease and append the log chunks (and stage times) under the fence, which includes
    the worker not being given up; a refusal reads why (401, 403 given up, 404/403/409 the lease)."""
    try:
        chunks = _decoded(body.logs, execution_id)
    except Invalid:
        require_alive(load_worker(engine, worker_id))
        raise
    lease = lifecycle.Lease(execution_id, attempt, worker_id)
    if not lifecycle.renew(engine, lease, chunks, body.truncated, dict(body.stages), worker_alive=True):
        worker = require_alive(load_worker(engine, worker_id))
        raise _refused_after_write(engine, worker, execution_id, attempt)
    return wire.RenewResponse()


def _decoded(logs: list[wire.LogChunkIn], execution_id: str) -> list[tuple[str, bytes]]:
    """(stream, bytes) per chunk; Invalid (400) when one is not standard base64."""
    chunks = []
    for chunk in logs:
        try:
            chunks.append((chunk.stream, base64.b64decode(chunk.data_b64, validate=True)))
        except (binascii.Error, ValueError):
            raise Invalid(f"A log chunk of run {execution_id} is not valid base64; send data_b64 as standard "
                          "base64. Nothing was written.") from None
    return chunks


def input_url(engine: Engine, store: ObjectStore, worker: TokenWorker, execution_id: str, attempt: int,
              name: str) -> wire.InputSpec:
    """A fresh presigned GET of one input of this run (its URL from the claim expired), signed
    now rather than reused (ObjectStore.presign_worker_get)."""
    run = _held(engine, worker, execution_id, attempt)
    spec = _named_input(run, execution_id, name)
    return wire.InputSpec(name=spec["name"], kind=spec.get("kind", "file"), sha256=spec["sha256"],
                          size=int(spec.get("size") or 0),
                          url=store.presign_worker_get(_input_key(execution_id, spec), fresh=True))


def _named_input(run, execution_id: str, name: str) -> dict:
    spec = next((i for i in run.inputs or () if i["name"] == name), None)
    if spec is None:
        raise NotFound(f"Run {execution_id} has no input named {name!r}; ask only for the inputs its claim listed.")
    return spec


def damaged_input(engine: Engine, worker: TokenWorker, execution_id: str, attempt: int, name: str,
                  store: ObjectStore | None = None) -> dict:
    """The stored copy of one of this run's inputs failed its sha256: that tenant forgets it and its
    object (so its next run uploads it again). No other tenant's record is touched."""
    run = _held(engine, worker, execution_id, attempt)
    key = _input_key(execution_id, _named_input(run, execution_id, name))
    forgotten = lifecycle.forget_blob(engine, key, tenant_id=run.tenant_id, store=store) if key.startswith("blobs/") else 0
    log.warning("worker %s found input %r of %s damaged; forgot %d kept copy", worker.id, name, execution_id, forgotten)
    return {"forgotten": forgotten > 0}


def output_urls(engine: Engine, store: ObjectStore, worker: TokenWorker, execution_id: str, attempt: int,
                body: wire.OutputUrlsRequest) -> wire.OutputUrlsResponse:
    """A presigned PUT per output, each under executions/<id>/outputs/a<attempt>/ and nowhere else."""
    _held(engine, worker, execution_id, attempt)
    _check_paths([f.path for f in body.files])
    return wire.OutputUrlsResponse(urls=[
        wire.OutputUrl(path=f.path, url=store.presign_worker_put(output_key(execution_id, attempt, f.path)))
        for f in body.files])


def _check_paths(paths: list[str]) -> None:
    for path in paths:
        problem = output_path_problem(path)
        if problem:
            raise Invalid(f"Output path {path!r} {problem}; outputs are plain relative paths inside /work. "
                          "Nothing was handed out or committed.")
    if len(set(paths)) != len(paths):
        raise Invalid("Two outputs have the same path; list each output once. Nothing was handed out or committed.")


# --- finish ------------------------------------------------------------------------------------


def finish(engine: Engine, store: ObjectStore, worker_id: str, execution_id: str, attempt: int,
           body: wire.FinishRequest) -> wire.FinishResponse:
    """Commit the attempt's result, outputs and last log chunks under the fence (which includes the
    worker not being given up), once each output is in the store with its size. Only when that does not commit are
    the worker and the lease read, and answered in this order: given up or fenced first (the same
    finish again, its answer lost, is answered the same; a refused attempt's uploaded outputs are
    deleted here, since the worker holds no store keys), then a bad path or a missing output."""
    early: ServiceError | None = None
    rows: list[dict] = []
    chunks: list[tuple[str, bytes]] = []
    try:
        chunks = _decoded(body.logs, execution_id)
        _check_paths([o.path for o in body.outputs])
        rows = [dict(path=o.path, size=o.size, sha256=o.sha256, object_key=output_key(execution_id, attempt, o.path))
                for o in body.outputs]
        missing = _not_stored(store, rows)
        if missing:
            early = Invalid(f"Not committed: {'; '.join(missing)}. Upload them through their output URLs and finish "
                            "again.")
    except ServiceError as e:
        early = e
    lease = lifecycle.Lease(execution_id, attempt, worker_id)
    if early is None and lifecycle.finish(engine, lease, body.status, body.exit_code, body.reason, rows,
                                          dict(body.stages), worker_alive=True, chunks=chunks, truncated=body.truncated):
        return wire.FinishResponse()
    worker = load_worker(engine, worker_id)
    with engine.connect() as conn:
        problem = _lease_refusal(conn, worker.id, execution_id, attempt)
    if worker.given_up or problem:
        return _refuse_finish(engine, store, worker, execution_id, attempt, body, problem)
    if early is not None:
        raise early
    return _refuse_finish(engine, store, worker, execution_id, attempt, body,
                          _refused_after_write(engine, worker, execution_id, attempt))


def _not_stored(store: ObjectStore, rows: list[dict]) -> list[str]:
    """Outputs missing from the store or of another size than declared, as phrases."""
    problems = []
    try:
        for row in rows:
            stat = store.stat(row["object_key"])
            if stat is None:
                problems.append(f"{row['path']} was not uploaded")
            elif stat.size != row["size"]:
                problems.append(f"{row['path']} holds {stat.size} bytes, not {row['size']}")
    except Exception as e:  # noqa: BLE001 - the store is away: nothing is committed, the worker retries
        raise Unavailable(f"The object store did not answer ({type(e).__name__}); nothing was committed. "
                          "Finish again in a few seconds.") from None
    return problems


def _refuse_finish(engine: Engine, store: ObjectStore, worker: TokenWorker, execution_id: str, attempt: int,
                   body: wire.FinishRequest, problem: ServiceError | None) -> wire.FinishResponse:
    """A finish that cannot commit: answered as committed when this attempt already committed
    this very status (the first answer was lost), else refused, after deleting the outputs of
    this worker's attempt if they will never be taken."""
    with engine.connect() as conn:
        ex = conn.execute(select(Execution.status, Execution.attempt, Execution.worker_id)
                          .where(Execution.id == execution_id)).first()
    committed = (ex is not None and ex.attempt == attempt and ex.worker_id == worker.id
                 and ex.status in WITH_OUTPUTS)
    if committed and ex.status == body.status:
        return wire.FinishResponse()
    mine = not isinstance(problem, (Forbidden, NotFound))
    if mine and not committed:
        try:
            store.delete_prefix(f"executions/{execution_id}/outputs/a{attempt}/")
        except Exception:  # noqa: BLE001 - the refusal stands; the files are never committed
            log.exception("could not delete the refused outputs of %s attempt %d", execution_id, attempt)
    raise given_up(worker) if worker.given_up else problem

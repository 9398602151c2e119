"""The execution rules behind the API: what a valid request is, which inputs are already held,
creating executions in one transaction, verifying uploads before queueing, canceling.

Functions take the engine, store and settings they need and raise `errors.ServiceError`s (a
sentence each), never HTTP errors; the routers turn requests into these calls."""
from __future__ import annotations

import re
import secrets

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine

from rgrid_core import requirements as requirement_lines
from rgrid_core.names import input_name_problem
from rgrid_core.runtimes import SUPPORTED_RUNTIMES
from rgrid_core.states import TERMINAL, ExecutionStatus

from .. import lifecycle
from ..db.clock import utcnow
from ..db.models import Blob, Execution
from ..db.session import write_tx
from ..settings import ServiceSettings
from ..storage import ObjectStore, blob_key
from . import quotas, schemas, uploads
from .errors import Conflict, Gone, Invalid, NotConfigured
from .queries import batch_totals, no_batch, owned, summary



# --- create -------------------------------------------------------------------------------------


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
    if body.requirements is not None:
        problem = requirements_problem(body.runtime, body.requirements)
        if problem:
            return problem
    for key, value in body.env.items():
        if not re.fullmatch(schemas.ENV_NAME, key):
            return f"Environment variable name {key!r} is not valid (letters, digits, _)."
        if "\x00" in value:
            return f"The value of {key} contains a NUL character, which no process can receive."
    if any("\x00" in a for a in body.args):
        return "An argument contains a NUL character, which no process can receive."
    if body.batch_parallel is not None and not body.batch_id:
        return "batch_parallel limits a batch: send it together with a batch_id."
    return None


def requirements_problem(runtime: str, text: str) -> str | None:
    """Why a requirements file cannot go with this runtime (a sentence), or None."""
    return requirement_lines.runtime_problem(runtime) or requirement_lines.problem(text)


def check_one(body: schemas.CreateExecution) -> None:
    problem = problem_with(body)
    if problem:
        raise Invalid(problem)


def check_many(bodies: list[schemas.CreateExecution]) -> None:
    """Each checked as a single create is; the first bad one is named, and nothing is created."""
    for n, one in enumerate(bodies):
        problem = problem_with(one)
        if problem:
            raise Invalid(f"Execution {n + 1} of {len(bodies)}: {problem} Nothing was created.")


# Built once: a create's statements (building them per request was a measurable share of its time).
HELD_BLOBS = (select(Blob.sha256, Blob.size, Blob.md5, Blob.object_key)
              .where(Blob.tenant_id == bindparam("tenant_id"), Blob.sha256.in_(bindparam("shas", expanding=True))))
MARK_USED = (update(Blob).where(Blob.tenant_id == bindparam("b_tenant_id"), Blob.sha256.in_(bindparam("shas", expanding=True)))
             .values(last_used_at=utcnow()))
INSERT_QUEUED = insert(Execution).values(created_at=utcnow(), queued_at=utcnow())  # milliseconds on SQLite too
INSERT_UPLOADING = insert(Execution).values(created_at=utcnow(), queued_at=None)


def held_blobs(engine: Engine, tenant_id: str, inputs: list) -> dict:
    """sha256 -> (sha256, size, md5, object_key) of this tenant's kept inputs with the sha256 of one
    of these inputs (specs or stored dicts): one read."""
    shas = sorted({i["sha256"] if isinstance(i, dict) else i.sha256 for i in inputs})
    if not shas:
        return {}
    with engine.connect() as conn:
        return {b.sha256: b for b in conn.execute(HELD_BLOBS, {"tenant_id": tenant_id, "shas": shas})}


def kept_inputs(engine: Engine, tenant_id: str, inputs: list[schemas.InputSpec], held: dict | None = None) -> dict[tuple, str]:
    """(sha256, size, md5) -> object key of every one of these inputs this tenant already
    uploaded and had verified (`held`: held_blobs of these inputs, when already read)."""
    held = held_blobs(engine, tenant_id, inputs) if held is None else held
    return {(b.sha256, b.size, b.md5): b.object_key for b in held.values()}


def declared_otherwise(engine: Engine, tenant_id: str, inputs: list, held: dict | None = None) -> str | None:
    """The sentence when an input names a sha256 this tenant keeps with another size or MD5: one
    sha256 is one content, so the declaration is wrong (and the kept blob must not be replaced).
    `held`: held_blobs of these inputs, when already read."""
    held = held_blobs(engine, tenant_id, inputs) if held is None else held
    for i in inputs:
        name, sha, size, md5 = ((i["name"], i["sha256"], i["size"], i["md5"]) if isinstance(i, dict)
                                else (i.name, i.sha256, i.size, i.md5))
        b = held.get(sha)
        if b is not None and (b.size, b.md5) != (size, md5):
            return (f"Input {name!r} declares sha256 {sha[:12]}… with {size} bytes and MD5 {md5}, but the file "
                    f"with that sha256 you uploaded before has {b.size} bytes and MD5 {b.md5}; send the "
                    f"checksums and size of the file itself.")
    return None


def kept_or_to_upload(store: ObjectStore, settings: ServiceSettings, tenant_id: str, execution_id: str,
                      inputs: list[schemas.InputSpec], kept: dict[tuple, str]):
    """Each input's stored spec with its object key, the uploads still needed (to the execution's
    staging keys, see api.uploads), and the names of inputs this tenant already uploaded with the
    same content (sha256, size and MD5)."""
    specs, to_upload, reused = [], [], []
    for i in inputs:
        spec = i.model_dump()
        key = kept.get((i.sha256, i.size, i.md5))
        if key:
            reused.append(i.name)
            spec["object_key"] = key
        else:
            spec["upload"] = True  # verified by submit, then kept
            to_upload.append(uploads.plan(store, settings, execution_id, spec))
        specs.append(spec)
    return specs, to_upload, reused


def sealer(settings: ServiceSettings):
    """seal_env of the control plane's keys: env values go into the database only sealed."""
    from ..secrets import MissingSecretKey, keys_for

    try:
        return keys_for(settings).seal_env
    except MissingSecretKey as e:
        raise NotConfigured(f"This control plane cannot keep env values: {e} Until then, run without --env.") from None


def create(engine: Engine, store: ObjectStore, settings: ServiceSettings, tenant_id: str,
           bodies: list[schemas.CreateExecution]) -> list[schemas.Created]:
    """Insert the (already checked) executions in one transaction: all of them or, on any error,
    none. With `submit` and nothing left to upload, one is inserted `queued` instead of `uploading`.
    Env values are stored sealed (env_sealed), their names apart (env_keys); never in plain."""
    every_input = [i for b in bodies for i in b.inputs]
    held = held_blobs(engine, tenant_id, every_input)
    problem = declared_otherwise(engine, tenant_id, every_input, held)
    if problem:
        raise Invalid(problem + " Nothing was created.")
    seal = sealer(settings) if any(b.env for b in bodies) else None
    kept = kept_inputs(engine, tenant_id, every_input, held)
    quota_before_multipart(engine, settings, tenant_id, bodies, kept)
    rows, created = [], []
    for body in bodies:
        execution_id = "ex-" + secrets.token_hex(6)
        specs, to_upload, reused = kept_or_to_upload(store, settings, tenant_id, execution_id, body.inputs, kept)
        queue_now = body.submit and not to_upload
        rows.append(dict(
            id=execution_id, tenant_id=tenant_id,
            status=ExecutionStatus.QUEUED if queue_now else ExecutionStatus.UPLOADING, script=body.script,
            args=body.args, env={}, env_sealed=seal(body.env) if body.env else None, env_keys=sorted(body.env),
            runtime=body.runtime, requirements=requirement_lines.normalised(body.requirements or "") or None,  # checked above
            timeout_seconds=body.timeout_seconds or settings.default_timeout_seconds,
            inputs=specs, batch_id=body.batch_id,
            batch_parallel=body.batch_parallel, max_attempts=settings.max_attempts,
        ))
        created.append(schemas.Created(id=execution_id, status=rows[-1]["status"], uploads=to_upload,
                                       reused=reused))
    with write_tx(engine) as conn:
        quotas.check(conn, settings, tenant_id, len(rows), upload_bytes(rows))  # 429: nothing created
        still_kept(conn, tenant_id, rows)
        for row in rows:  # one statement per row: created_at and queued_at are SQL expressions
            conn.execute(INSERT_QUEUED if row["status"] == ExecutionStatus.QUEUED else INSERT_UPLOADING, row)
    return created


def still_kept(conn, tenant_id: str, rows: list[dict]) -> None:
    """Mark the kept inputs these rows reuse as used now (retention keeps used ones). One that
    retention deleted since it was looked up is gone: refused with a sentence, nothing created."""
    reused = sorted({s["sha256"] for row in rows for s in row["inputs"] if not s.get("upload")})
    if not reused:
        return
    marked = conn.execute(MARK_USED, {"b_tenant_id": tenant_id, "shas": reused}).rowcount
    if marked != len(reused):
        raise Conflict("An input you uploaded before was just deleted after its retention time; nothing was "
                       "created. Run it again to upload it anew.")


def quota_before_multipart(engine: Engine, settings: ServiceSettings, tenant_id: str,
                           bodies: list[schemas.CreateExecution], kept: dict[tuple, str]) -> None:
    """When an input goes up by multipart (the store starts an upload for it at create), check the
    quota first, so a refused create starts none. The check in create's transaction still rules."""
    new = [i.size for b in bodies for i in b.inputs if (i.sha256, i.size, i.md5) not in kept]
    if any(size > settings.multipart_threshold_bytes for size in new):
        with engine.connect() as conn:
            quotas.check(conn, settings, tenant_id, len(bodies), sum(new))


def upload_bytes(rows: list[dict]) -> int:
    """Bytes the new rows ask to upload: every staged upload, the same content in many runs too (each
    run has its own staging key until submit), as quotas.stored_bytes counts them."""
    return sum(s["size"] for row in rows for s in row["inputs"] if s.get("upload"))


# --- submit and cancel --------------------------------------------------------------------------


def submit(engine: Engine, store: ObjectStore, tenant_id: str, execution_id: str) -> Execution:
    """uploading -> queued once every uploaded input checks out; each is then copied to where the
    tenant's inputs are kept by content, the run's inputs name that copy, and it is kept for reuse
    in the same transaction as the queueing (lifecycle.submit). See api.uploads."""
    ex = owned(engine, tenant_id, execution_id)
    if ex.status != ExecutionStatus.UPLOADING or not lifecycle.submit_started(engine, execution_id):
        ex = owned(engine, tenant_id, execution_id)
        raise Conflict(f"Execution {execution_id} was already submitted (it is {ex.status}).")
    try:
        return _submit(engine, store, tenant_id, ex)
    except Exception:
        lifecycle.submit_started(engine, execution_id, started=False)  # refused: expiry may cancel it again
        raise


def _submit(engine: Engine, store: ObjectStore, tenant_id: str, ex: Execution) -> Execution:
    execution_id = ex.id
    uploaded = [spec for spec in ex.inputs if spec.get("upload")]
    problems = [p for p in (uploads.verify(store, spec) for spec in uploaded) if p]
    if problems:
        raise Conflict("Not queued: " + "; ".join(problems) + ". Upload again and resubmit.")
    staged = [spec for spec in uploaded if spec["object_key"].startswith("uploads/")]
    problem = declared_otherwise(engine, tenant_id, staged)
    if problem:  # another run kept this sha256 since this one was created
        raise Conflict(f"Not queued: {problem} Cancel this run and create it again.")
    held = {k[0] for k in kept_inputs(engine, tenant_id, [schemas.InputSpec(**{k: s[k] for k in (
        "name", "kind", "size", "sha256", "md5")}) for s in staged])}
    staging = {id(s) for s in staged}
    # A blob key any row names is never copied over: held means any row for the sha256.
    copies = {blob_key(tenant_id, s["sha256"]) for s in staged if s["sha256"] not in held}
    inputs = [uploads.keep(store, tenant_id, s, s["sha256"] in held) if id(s) in staging else s
              for s in ex.inputs]
    if not lifecycle.submit(engine, execution_id, [s for s in inputs if s.get("upload")], tenant_id, inputs=inputs):
        uploads.drop_unrecorded(engine, store, tenant_id, copies)
        now = owned(engine, tenant_id, execution_id)
        why = (now.reason or "it changed meanwhile").rstrip(".")
        raise Conflict(f"Not queued: {execution_id} was {now.status} while it was being submitted ({why}); "
                       f"create it again to run it.")
    uploads.forget(store, staged)
    return owned(engine, tenant_id, execution_id)


def files_kept(ex: Execution, settings: ServiceSettings) -> None:
    """Raise Gone (410, a sentence) when retention deleted the run's files."""
    from ..policies.retention import retention_words

    if ex.files_expired_at is not None:
        raise Gone(f"The files of {ex.id} were deleted on {ex.files_expired_at:%Y-%m-%d} after "
                   f"{retention_words(settings.retention)} of retention; run it again to get them.")


def cancel(engine: Engine, tenant_id: str, execution_id: str, store: ObjectStore | None = None) -> Execution:
    """Cancel the tenant's execution unless it already ended; it as it is now. One canceled while
    uploading has its staged uploads deleted now, in the background (with `store`; else at retention)."""
    ex = owned(engine, tenant_id, execution_id)
    if ex.status in TERMINAL:
        return ex
    if lifecycle.cancel(engine, execution_id) and store is not None and ex.status == ExecutionStatus.UPLOADING:
        uploads.discard_soon(store, execution_id, ex.inputs or [])
    return owned(engine, tenant_id, execution_id)


def cancel_batch(engine: Engine, tenant_id: str, batch_id: str,
                 store: ObjectStore | None = None) -> schemas.BatchCanceled:
    """Cancel every unfinished execution of the tenant's batch in one transaction
    (lifecycle.cancel_batch); the batch's counts afterwards. Those canceled while uploading have
    their staged uploads deleted (with `store`)."""
    uploading = []
    if store is not None:
        with engine.connect() as conn:
            uploading = conn.execute(select(Execution.id, Execution.inputs).where(
                Execution.tenant_id == tenant_id, Execution.batch_id == batch_id,
                Execution.status == ExecutionStatus.UPLOADING)).all()
    canceled = lifecycle.cancel_batch(engine, tenant_id, batch_id)
    for run in uploading:  # canceled by this call or another: either way never submitted
        uploads.discard_soon(store, run.id, run.inputs or [])
    counts, cost = batch_totals(engine, tenant_id, batch_id)
    if not counts:
        raise no_batch(batch_id)
    return schemas.BatchCanceled(canceled=canceled, **summary(batch_id, counts, cost))

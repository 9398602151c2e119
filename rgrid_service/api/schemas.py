"""Request and response bodies of the /v1 API."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from rgrid_core.names import INPUT_NAME_SCHEMA
from rgrid_core.constants import REQUIREMENTS_MAX_CHARS
from rgrid_core.runtimes import SUPPORTED_RUNTIMES

from ..stages import current_stage, timeline


def _as_utc(value: datetime) -> datetime:
    """The database keeps naive UTC; a response says so."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# Every timestamp in a response: ISO 8601 in UTC with its microseconds always written
# (`2026-11-29T22:18:17.123000Z`), so they are all the same width and sort as strings.
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(lambda v: v.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The API reaches its database.")


# Rules the schema states (json_schema_extra) and service.problem_with enforces, so that a refusal is
# a 400 with a sentence that says what to change rather than a validation error: no NUL where a
# process receives the value, environment variable names, input names (rgrid_core.names), runtimes.
NO_NUL = r"^[^\x00]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class InputSpec(BaseModel):
    name: str = Field(description="File name inside /work: not empty, at most 255 bytes in UTF-8, no '/', "
                      "'\\' or control character, not '.' or '..'.", json_schema_extra=INPUT_NAME_SCHEMA)
    kind: Literal["file", "dir"] = "file"
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    md5: str = Field(pattern=r"^[0-9a-f]{32}$", description="Checked against the store's ETag on submit.")


# A valid create, for the OpenAPI (and so for the contract test, whose examples phase sends it).
CREATE_EXAMPLE = {
    "script": "hello.py", "args": ["--name", "grid"], "env": {"GREETING": "hi"},
    "inputs": [{"name": "hello.py", "kind": "file", "size": 15,
                "sha256": "03e693d9f2f687e0f40e36a8df7fcb4d1c22974012b7c2a55c000eb30f305824",
                "md5": "100e360cc768f15a35ed9ddf05e354ce"}],
}


class CreateExecution(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [CREATE_EXAMPLE]})

    script: str = Field(description="Name of the input that is the script to run (one of `inputs`).",
                        json_schema_extra=INPUT_NAME_SCHEMA)
    args: list[str] = Field(default_factory=list, max_length=10_000, description="No NUL character.",
                            json_schema_extra={"items": {"type": "string", "pattern": NO_NUL}})
    env: dict[str, str] = Field(
        default_factory=dict, description="Names of letters, digits and _ (not starting with a digit); values "
        "without NUL. Kept sealed; responses show the names only.",
        json_schema_extra={"propertyNames": {"pattern": ENV_NAME},
                           "additionalProperties": {"type": "string", "pattern": NO_NUL}})
    runtime: str = Field("python:3.11", json_schema_extra={"enum": list(SUPPORTED_RUNTIMES)})
    requirements: str | None = Field(
        default=None, max_length=REQUIREMENTS_MAX_CHARS,
        description="The text of a requirements.txt: the worker installs its packages (wheels from PyPI) into a "
        "layer on the runtime's image, built once per tenant, runtime and list of packages and shared by the fleet. "
        "Python runtimes only. Each line that is not blank or a comment must be a package name with optional extras, "
        "version specifiers and an environment marker (PEP 508, no URL); pip options (-r, -c, -e, --index-url, ...), "
        "paths, URLs and `name @ url` are refused with 400 and a sentence naming the line.")
    timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    inputs: list[InputSpec] = Field(default_factory=list, max_length=10_000)
    batch_id: str | None = Field(default=None, max_length=32)
    batch_parallel: int | None = Field(
        default=None, ge=1, le=10000,
        description="At most this many executions of the batch run at once; only together with a batch_id."
    )
    submit: bool = Field(
        default=False,
        description="Queue it at once when no input needs uploading (every input was uploaded and verified "
        "before, by this tenant); otherwise upload what `uploads` lists and call submit as usual.",
    )


class Upload(BaseModel):
    name: str
    url: str | None = Field(description="Presigned PUT of the whole file; null when it goes in parts (`part_urls`).")
    upload_id: str | None = Field(None, description="The multipart upload, for a file over the multipart threshold.")
    part_bytes: int | None = Field(None, description="Bytes in each part but the last (multipart).")
    part_urls: list[str] = Field(default_factory=list,
                                 description="Presigned UploadPart URLs, part 1 first: PUT each part, then submit.")


class Created(BaseModel):
    id: str
    status: str = Field(description="`uploading`, or `queued` when `submit` was asked and nothing needed uploading.")
    uploads: list[Upload] = Field(description="Inputs to PUT to their presigned URL before submitting.")
    reused: list[str] = Field(default_factory=list,
                              description="Inputs already held by content from an earlier upload: not uploaded again.")


class Attempt(BaseModel):
    attempt: int
    worker_id: str | None
    started_at: UtcDateTime | None
    running_at: UtcDateTime | None = None
    uploading_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None
    outcome: str | None
    reason: str | None
    cost_eur: float | None = None


class StageTime(BaseModel):
    stage: str = Field(description="queued, provisioning, dispatched, staging, running, uploading or finished.")
    at: UtcDateTime


class WaitingView(BaseModel):
    """What a queued run waits for: a sentence to show, and its parts."""

    kind: str = Field(description="dispatched, quota, provider, booting, provisioning or slot.")
    sentence: str
    position: int = Field(description="Its place in the queue (1: next).")
    queued: int = Field(description="Runs queued in all.")
    worker_id: str | None = None
    elapsed_seconds: float | None = None
    seconds_left: float | None = None
    attempt: str | None = Field(default=None, description="A provider error's try within its round: `2/3`.")


class InputView(BaseModel):
    """An input as a run shows it: its object key and checksums stay inside."""

    name: str
    kind: Literal["file", "dir"]
    size: int


class ExecutionView(BaseModel):
    id: str
    status: str
    script: str
    args: list[str]
    env_keys: list[str]
    runtime: str
    timeout_seconds: int
    inputs: list[InputView]
    batch_id: str | None
    batch_parallel: int | None = None
    attempt: int
    max_attempts: int
    worker_id: str | None
    exit_code: int | None
    reason: str | None
    log_truncated: bool
    created_at: UtcDateTime | None
    queued_at: UtcDateTime | None
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    attempts: list[Attempt] = Field(default_factory=list)
    stage: str = Field(default="created", description="The last stage of `timeline` (`created` before it is queued).")
    timeline: list[StageTime] = Field(default_factory=list, description="Each stage reached, with when.")
    waiting: WaitingView | None = Field(default=None, description="While queued: what it waits for.")
    cost_eur: float | None = Field(None, description="Its share of its workers' paid hours in EUR, over every "
                                   "attempt (docs/architecture.md, Costs); null until an attempt is priced.")
    cost_note: str | None = Field(None, description="Why cost_eur is null, 0 or not final yet.")

    @classmethod
    def of(cls, ex, attempts=(), current=None, waiting=None, unpriced_why: str | None = None) -> "ExecutionView":
        """An execution row as the API shows it: env values and object keys stay inside. `current`
        is its current attempt's row (else looked up in `attempts`), `waiting` a policies.waiting
        answer, `unpriced_why` why its worker has no price (its cost is then 0)."""
        if current is None:
            current = next((a for a in attempts if a.attempt == ex.attempt), None)
        steps = timeline(ex, current)
        # Rows written before env values were sealed name them in `env` (migration 0008 wrote their env_keys).
        env_keys = ex.env_keys if ex.env_keys is not None else list(ex.env or {})
        return cls(
            id=ex.id, status=ex.status, script=ex.script, args=ex.args, env_keys=sorted(env_keys),
            runtime=ex.runtime, timeout_seconds=ex.timeout_seconds,
            inputs=[{k: i[k] for k in ("name", "kind", "size")} for i in ex.inputs or []],
            batch_id=ex.batch_id, batch_parallel=ex.batch_parallel, attempt=ex.attempt,
            max_attempts=ex.max_attempts, worker_id=ex.worker_id,
            exit_code=ex.exit_code, reason=ex.reason, log_truncated=ex.log_truncated,
            created_at=ex.created_at, queued_at=ex.queued_at, started_at=ex.started_at,
            finished_at=ex.finished_at,
            attempts=[Attempt.model_validate(a, from_attributes=True) for a in attempts],
            stage=current_stage(steps), timeline=[StageTime(stage=s, at=at) for s, at in steps],
            waiting=WaitingView(**asdict(waiting)) if waiting is not None else None,
            cost_eur=ex.cost_eur, cost_note=cost_note(ex, unpriced_why),
        )


def cost_note(ex, unpriced_why: str | None) -> str | None:
    """Why a run's cost is null, 0 or still growing; None when it is simply its final cost."""
    from rgrid_core.states import TERMINAL

    if ex.cost_eur is None:
        if ex.status in TERMINAL:
            if not ex.attempt:
                return "It never ran on a worker, so it cost nothing."
            return "Being priced: a run's cost is recorded within seconds of its end."
        return "Priced when its current attempt ends." if ex.status == "running" else \
            "Not run yet: a run is priced when it ends."
    if unpriced_why:
        if unpriced_why == "local worker":
            return f"It ran on {ex.worker_id}, a local worker, which costs nothing."
        return (f"Counted as 0: {unpriced_why} (worker {ex.worker_id}); add it to the price table "
                "(RGRID_PRICE_TABLE) to price such runs.")
    if ex.status not in TERMINAL:
        return "So far: the current attempt is priced when it ends."
    return None


class LogChunkView(BaseModel):
    id: int
    attempt: int
    stream: str
    data_b64: str


class LogPage(BaseModel):
    chunks: list[LogChunkView]
    next_after: int
    status: str
    finished: bool


class OutputView(BaseModel):
    path: str
    size: int
    sha256: str
    url: str


class WorkerView(BaseModel):
    id: str
    provider: str
    state: str
    slots: int
    created_at: UtcDateTime | None
    last_heartbeat_at: UtcDateTime | None
    running: list[str]
    dead_reason: str | None
    server_type: str | None = None
    location: str | None = None
    server_id: str | None = None


class FleetEventView(BaseModel):
    at: UtcDateTime
    kind: str  # decision | update | error
    trigger: str | None
    message: str
    duration_seconds: float | None
    ok: bool


class ClusterView(BaseModel):
    ray_dashboard_url: str | None
    workers: list[WorkerView]
    fleet_events: list[FleetEventView] = []  # the fleet's latest decisions, updates and errors, newest first


# ---------------------------------------------------------------- the fleet (operator scope)


class WorkerInfo(BaseModel):
    id: str
    provider: str
    state: str
    server_type: str | None
    location: str | None
    server_id: str | None
    slots: int
    slots_used: int = Field(description="Runs running on it now.")
    created_at: UtcDateTime
    age_seconds: float
    paid_hour_left_seconds: float | None = Field(
        description="Time left in the started billing hour, counted from the record's creation (None once the "
        "server is gone).")
    last_heartbeat_at: UtcDateTime | None
    ray_node_id: str | None = Field(description="The Ray node carrying its label, as the orchestrator last saw it.")
    dead_reason: str | None
    retire_requested_at: UtcDateTime | None = None


class WorkersView(BaseModel):
    now: UtcDateTime = Field(description="The database's clock, which ages and paid hours are counted from.")
    workers: list[WorkerInfo]


class Retired(BaseModel):
    id: str
    state: str
    message: str


class PlanAction(BaseModel):
    kind: str = Field(description="declare_dead | provision | drain | keep | delete")
    workers: list[str]
    reason: str
    trigger: str


class ServerChange(BaseModel):
    worker_id: str
    change: str = Field(description="create | delete | replace | update")
    server_type: str | None
    hourly_eur: float | None = Field(description="The type's price per hour (None: not in the price table).")
    monthly_eur: float | None


class CostChange(BaseModel):
    now_hourly_eur: float = Field(description="What the servers that exist now cost per hour.")
    hourly_eur: float = Field(description="The change per hour.")
    monthly_eur: float = Field(description="The change per month (Hetzner's monthly caps).")
    prices_as_of: list[str] = Field(description="The dates of the prices used.")
    missing: list[str] = Field(description="A sentence per server type the price table lacks.")


class FleetPreviewView(BaseModel):
    at: UtcDateTime
    provider: str
    queued: int
    trigger: str | None = Field(description="Why an update would run now (None: the plan changes no server).")
    actions: list[PlanAction]
    new_workers: list[str] = Field(description="The ids the workers the plan adds would get.")
    desired: list[str] = Field(description="Worker ids that should have a server after the plan.")
    existing: list[str] = Field(description="Worker ids that have a server now.")
    diff: dict[str, list[str]] = Field(description="The engine's diff: create, delete, replace (worker ids).")
    servers: list[ServerChange]
    cost: CostChange


class FleetUpdateView(BaseModel):
    id: int
    at: UtcDateTime
    trigger: str | None = Field(description="provisioning | replacement | retirement | manual")
    ok: bool
    summary: str = Field(description="What changed, or the error as a sentence.")
    diff: dict[str, list[str]] | None
    duration_seconds: float | None


class FleetHistory(BaseModel):
    updates: list[FleetUpdateView] = Field(description="Newest first.")
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; None: no more.")


class BatchView(BaseModel):
    batch_id: str
    total: int
    counts: dict[str, int] = Field(description="Executions of the batch per status (only statuses that occur).")
    finished: bool = Field(description="True when every execution of the batch has ended.")
    cost_eur: float | None = Field(None, description="What its executions cost so far, in EUR (null: none priced yet).")


class BatchCanceled(BatchView):
    canceled: int = Field(description="Executions this request canceled (those not yet ended); "
                                      "counts, total and finished are the batch as it is afterwards.")


BULK_MAX = 1000


class CreateMany(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"executions": [CREATE_EXAMPLE,
                                                                             {**CREATE_EXAMPLE, "args": ["2"]}]}]})

    executions: list[CreateExecution] = Field(min_length=1, max_length=BULK_MAX)


class CreatedMany(BaseModel):
    created: list[Created] = Field(description="One per requested execution, in the same order.")


class FleetCostHour(BaseModel):
    hour: UtcDateTime = Field(description="The clock hour's start (UTC).")
    spend_eur: float = Field(description="Paid server hours that began in this clock hour, at the price table's prices.")
    runs_eur: float = Field(description="What runs paid of those paid hours (their slot-seconds).")
    idle_eur: float = Field(description="The rest: paid capacity nobody used (the hour in progress counts whole).")
    workers: int = Field(description="Priced workers with a paid hour beginning in this clock hour.")


class FleetCosts(BaseModel):
    hours: list[FleetCostHour] = Field(description="Oldest first, the current clock hour last.")
    spend_eur: float
    runs_eur: float
    idle_eur: float
    prices: dict[str, float] = Field(description="EUR per hour of each server type the table prices.")
    prices_as_of: dict[str, str] = Field(description="The date each price was read.")


class RuntimeView(BaseModel):
    """One catalogue runtime (rgrid_core.runtimes) and where the grid has it."""
    name: str
    contents: str
    default: bool
    runs_in: str
    debian_suite: str
    packages: list[str]
    image_tag: str
    # The image's unpacked size, as the workers holding it reported it; None: no worker has it.
    size_bytes: int | None
    # Active workers that can run it now: they hold its image (or, for a runtime that also runs in
    # bubblewrap, have no Docker), of all active workers; the ids of those that cannot.
    workers_ready: int
    workers_active: int
    workers_missing: list[str]


class RuntimesView(BaseModel):
    runtimes: list[RuntimeView]

"""The worker API's wire format: what a worker's agent and runner send the control plane, and what
they get back. Both sides import these models, so the two cannot drift apart.

A worker holds one credential, its worker token (`Authorization: Bearer rgw…`), issued when its
record is created and refused once the worker is retired, dead or deleted. The token acts only on
runs dispatched to that worker. Files move through presigned URLs the control plane hands out per
run; a worker holds no database URL and no store keys.

Statuses a worker must handle (every refusal carries `detail`, a sentence):
  401  no token, or a token that is not one the control plane issued;
  403  the token's worker is not alive (dead, deleting, deleted), or the run was not dispatched to
       it, or (claim) the worker is not active (draining);
  404  no such run;
  409  fenced: the run is no longer this attempt's (re-queued, canceled, already finished), or
       (claim) it is not queued any more;
  503  the database is away: try again (the request changed nothing).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

PREFIX = "/v1/worker"
TOKEN_PREFIX = "rgw_"
# The `code` a refusal body carries when the control plane has given the worker up (dead, being
# deleted, token revoked): the one answer that takes a worker down. Any other 4xx is a failed call.
GIVEN_UP = "given_up"

# Paths, relative to the API's base URL. {id} is the execution, {attempt} the fencing token.
REGISTER = PREFIX + "/register"
HEARTBEAT = PREFIX + "/heartbeat"
CLAIM = PREFIX + "/runs/{id}/claim"
RENEW = PREFIX + "/runs/{id}/attempts/{attempt}/renew"
INPUT_URL = PREFIX + "/runs/{id}/attempts/{attempt}/inputs/{name}"  # GET: a fresh URL (cache miss)
DAMAGED_INPUT = PREFIX + "/runs/{id}/attempts/{attempt}/inputs/{name}/damaged"  # POST: forget the blob
OUTPUT_URLS = PREFIX + "/runs/{id}/attempts/{attempt}/output-urls"
FINISH = PREFIX + "/runs/{id}/attempts/{attempt}/finish"
RUNTIME_DIGESTS = PREFIX + "/runtime-digests"  # GET: the catalogue images' digests (before the pull)


class RuntimeImage(BaseModel):
    """A catalogue runtime's image a worker holds (rgrid_core.runtimes): `rgrid runtimes` shows
    whether every worker has each one."""
    runtime: str = Field(max_length=64)
    tag: str = Field(max_length=128)
    size_bytes: int = Field(ge=0, le=2**53)


class RegisterRequest(BaseModel):
    slots: int = Field(ge=1, le=256)
    provider: str = Field(default="local", max_length=32)
    # Whether the worker runs scripts in Docker, and the runtime images it held when it registered
    # (it pulls them all before that). A worker without Docker runs python:3.11 in bubblewrap.
    docker: bool = False
    images: list[RuntimeImage] = Field(default=[], max_length=64)


# A runtime image's manifest digest: workers pull and run an image only by it (rgrid_core.imagedigests).
ImageDigest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class RuntimeDigests(BaseModel):
    """runtime -> the manifest digest its image was built with; a runtime missing here is one the
    worker must not run in Docker (its image cannot be checked)."""
    digests: dict[str, ImageDigest] = {}


class RegisterResponse(BaseModel):
    worker_id: str
    heartbeat_interval_seconds: float


class HeartbeatResponse(BaseModel):
    worker_id: str
    running: list[str]  # the runs the control plane has running on this worker


class InputSpec(BaseModel):
    """One input to stage: from the worker's cache by sha256, else from `url` (a presigned GET of
    this one object, valid for a short time; INPUT_URL gives a fresh one)."""

    name: str
    kind: Literal["file", "dir"] = "file"
    sha256: str
    size: int
    url: str


class ClaimResponse(BaseModel):
    attempt: int
    script: str
    args: list[str]
    env: dict[str, str]  # the secret values, decrypted for this attempt only; never log them
    runtime: str
    timeout_seconds: int
    inputs: list[InputSpec]
    # A requirements.txt whose packages go into a layer on the runtime's image (rgrid_runner.layers).
    requirements: str | None = None
    # Names the tenant in its requirements layers' names (a hash of the tenant id): one tenant's
    # layer never serves another tenant's run.
    layer_scope: str | None = None
    # The manifest digest of the runtime's image (None: the control plane publishes none for it,
    # and a Docker worker refuses the run rather than start an image it cannot check).
    image_digest: ImageDigest | None = None


# Standard base64, as the OpenAPI states it (the control plane decodes with validate=True: 400 otherwise).
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class LogChunkIn(BaseModel):
    stream: Literal["stdout", "stderr", "system"]
    data_b64: str = Field(json_schema_extra={"pattern": BASE64})


# Seconds ago a stage began: within the database's range of times (a run's timeout is far less).
StageAgo = Annotated[float, Field(ge=0, le=10**9)]


class RenewRequest(BaseModel):
    logs: list[LogChunkIn] = []
    truncated: bool = False
    # stage -> seconds ago, on the runner's monotonic clock ("running", "uploading")
    stages: dict[Literal["running", "uploading"], StageAgo] = {}


class RenewResponse(BaseModel):
    kept: Literal[True] = True  # a lost lease is 409, never kept=False


class OutputFile(BaseModel):
    path: str = Field(max_length=1024)
    size: int = Field(ge=0)


class OutputUrlsRequest(BaseModel):
    files: list[OutputFile] = Field(max_length=10000)


class OutputUrl(BaseModel):
    path: str
    url: str  # a presigned PUT of executions/<id>/outputs/a<attempt>/<path>, short expiry


class OutputUrlsResponse(BaseModel):
    urls: list[OutputUrl]


class CommittedOutput(BaseModel):
    path: str = Field(max_length=1024)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FinishRequest(BaseModel):
    status: Literal["succeeded", "failed", "timed_out"]
    exit_code: int | None = Field(default=None, ge=-2**31, le=2**31 - 1)  # the database's 32-bit integer
    reason: str | None = Field(default=None, max_length=4000)
    outputs: list[CommittedOutput] = []
    stages: dict[Literal["running", "uploading"], StageAgo] = {}
    # The script's last log chunks (what it wrote after the last renew), committed in the same
    # transaction as the status: a short run that prints needs no renew of its own.
    logs: list[LogChunkIn] = []
    truncated: bool = False


class FinishResponse(BaseModel):
    committed: Literal[True] = True  # finishing again with the same status is answered the same

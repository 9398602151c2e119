"""The worker's one way to the control plane: the worker API (rgrid_core.workerwire) and the
presigned URLs it hands out. A worker holds its token and nothing else.

One client per process, kept for the process's life: its connections stay open (keep-alive), so a
run costs the same round trips it did when the runner wrote to the database (claim, renews,
finish; an output-urls call only when the script wrote files).

The API's small JSON requests go through rgrid_runner.apiconnections (http.client, kept alive):
through httpx they cost a sixth of a no-op run's runner CPU. The presigned transfers stream
through httpx.

Transient trouble is tried again, then the last error is raised as Unreachable: 503 (the API
answers, its database is away: nothing expires meanwhile) for the outage budget; no connection, a
timeout, 502/504 (the API itself away: the orchestrator counts that silence against dead_after)
only for the shorter unreachable budget. 409 is
Fenced (the run is no longer this attempt's), 401/403/404 Refused with the server's sentence (and
its code: only `given_up` means the control plane has given this worker up).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import httpx

from rgrid_core import workerwire as wire
from rgrid_core.retry import retrying

from .apiconnections import TRANSPORT_ERRORS as API_TRANSPORT_ERRORS
from .apiconnections import Answer, ApiConnections

log = logging.getLogger("rgrid.workerclient")

CHUNK = 1024 * 1024
TRANSIENT = (502, 503, 504)
STORE_TRANSIENT = (500, 502, 503, 504)
# A presigned URL past its expiry: S3 answers 403 (SeaweedFS and AWS alike; some stores say 400).
EXPIRED = (400, 403)


class Fenced(Exception):
    """409: the run is no longer this attempt's (re-queued, canceled, finished)."""


class Refused(Exception):
    """401/403/404: the control plane will not let this worker do it; the message is its sentence.
    `given_up` only when the body says so (`"code": "given_up"`): a 4xx from a misrouted proxy or
    an older API during a deploy is not the control plane giving the worker up."""

    def __init__(self, status: int, sentence: str, code: str | None = None):
        super().__init__(sentence)
        self.status = status
        self.code = code

    @property
    def given_up(self) -> bool:
        return self.code == wire.GIVEN_UP


class Rejected(RuntimeError):
    """400: the request cannot be done as sent (a finish whose outputs are not in the store); the
    message is the control plane's sentence."""

    def __init__(self, sentence: str):
        super().__init__(sentence)
        self.sentence = sentence


class Unreachable(Exception):
    """The API (or the store) stayed away for the whole outage budget."""


class ChecksumMismatch(Exception):
    """A downloaded input is not what its sha256 says: the stored copy is damaged."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


class _Transient(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


def _code(r: Answer) -> str | None:
    """The refusal's machine-readable code (ErrorBody.code), if it has one."""
    try:
        body = json.loads(r.content)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _detail(r: Answer) -> str:
    try:
        body = json.loads(r.content)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str):
            return detail
        if detail is not None:
            return str(detail)
    except ValueError:
        pass
    return (r.text or r.reason or "")[:300]


def _is_transient(e: BaseException) -> bool:
    """Trouble with the store worth trying again."""
    return isinstance(e, (httpx.TransportError, _Transient))


def _api_transient(e: BaseException) -> bool:
    """Trouble with the API worth trying again: no answer, or 502/503/504."""
    return isinstance(e, (_Transient,) + API_TRANSPORT_ERRORS)


class _Budgets:
    """`when` for retrying(): transient trouble is tried again while its kind's budget lasts. A
    stretch of the API being unreachable is counted from its first failure; a 503 in between
    (the API answered) ends the stretch."""

    def __init__(self, unreachable: float):
        self.unreachable = unreachable
        self.since: float | None = None

    def __call__(self, e: BaseException) -> bool:
        if not _api_transient(e):
            return False
        if isinstance(e, _Transient) and e.status == 503:
            self.since = None
            return True
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        return now - self.since < self.unreachable


def log_chunks(chunks) -> list[wire.LogChunkIn]:
    """(stream, bytes) pairs as the wire carries them (renew, finish)."""
    return [wire.LogChunkIn(stream=s, data_b64=base64.b64encode(d).decode()) for s, d in chunks]


class WorkerClient:
    """Every worker-API call and every presigned transfer, through two keep-alive pools: one for
    the API (apiconnections, with the token), one for the store (httpx, no token: a presigned URL
    carries its own). Both are safe to share between the threads of one process: more
    connections are opened while several runs talk at once, and up to API_CONNECTIONS kept."""

    API_CONNECTIONS = 8

    def __init__(self, api_url: str, token: str, outage_budget: float, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, unreachable_budget: float | None = None):
        self.api_url = api_url.rstrip("/")
        self.budget = outage_budget  # 503: the database away behind the API
        self.unreachable_budget = outage_budget if unreachable_budget is None else min(unreachable_budget, outage_budget)
        # Neither pool reads proxy variables: a Ray process's environment points HTTP proxies at a
        # closed port (see rgrid_service.raynet.ray_process_env); the API and the store are reached
        # directly.
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self.http = ApiConnections(self.api_url, timeout, min(timeout, 10.0), keep=self.API_CONNECTIONS)
        self.files = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0), trust_env=False, transport=transport)

    @classmethod
    def for_settings(cls, settings) -> "WorkerClient":
        return cls(settings.api_url, settings.worker_token, settings.outage_budget, settings.api_timeout_seconds,
                   unreachable_budget=settings.unreachable_budget)

    def close(self) -> None:
        self.http.close()
        self.files.close()

    # ---- the API -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, body=None, budget: float | None = None) -> bytes | None:
        """One API call, tried again through transient trouble for `budget` seconds (default: the
        outage budget for 503s, the unreachable budget for no answer or 502/504; 0: once).
        Returns the answer's JSON text (None when empty)."""
        payload = body.model_dump_json().encode() if body is not None else None
        headers = self._json_headers if payload is not None else self._headers

        def once() -> Answer:
            answer = self.http.request(method, path, payload, headers)
            if answer.status_code in TRANSIENT:
                raise _Transient(answer.status_code, _detail(answer))
            return answer

        seconds = self.budget if budget is None else budget
        when = _Budgets(self.unreachable_budget) if budget is None else _api_transient
        began = time.monotonic()
        try:
            r = retrying(once, seconds=seconds, when=when, first_wait=0.2, max_wait=2, log=log) \
                if seconds > 0 else once()
        except (_Transient,) + API_TRANSPORT_ERRORS as e:
            raise Unreachable(f"The control plane at {self.api_url} could not be reached for "
                              f"{time.monotonic() - began:.0f} s ({type(e).__name__}: {e}).") from e
        if r.status_code == 409:
            raise Fenced(_detail(r))
        if r.status_code in (401, 403, 404):
            raise Refused(r.status_code, _detail(r), _code(r))
        if r.status_code == 400:
            raise Rejected(_detail(r))
        if r.status_code >= 400:
            raise RuntimeError(f"The control plane answered {method} {path} with HTTP {r.status_code}: {_detail(r)}")
        return r.content or None

    def register(self, slots: int, provider: str, budget: float | None = None,
                 images: list[dict] | None = None) -> wire.RegisterResponse:
        """images: the runtime images the worker holds (container.held_images); None: no Docker."""
        body = wire.RegisterRequest(slots=slots, provider=provider, docker=images is not None, images=images or [])
        return wire.RegisterResponse.model_validate_json(self._call("POST", wire.REGISTER, body, budget))

    def runtime_digests(self, budget: float | None = None) -> dict[str, str]:
        """runtime -> the manifest digest of its image: the only images this worker may run."""
        return wire.RuntimeDigests.model_validate_json(self._call("GET", wire.RUNTIME_DIGESTS, budget=budget)).digests

    def heartbeat(self, budget: float | None = 0) -> wire.HeartbeatResponse:
        return wire.HeartbeatResponse.model_validate_json(self._call("POST", wire.HEARTBEAT, budget=budget))

    def claim(self, execution_id: str) -> wire.ClaimResponse | None:
        """The run's spec, or None when it is not queued any more (somebody else has it, or it was
        canceled)."""
        try:
            return wire.ClaimResponse.model_validate_json(self._call("POST", wire.CLAIM.format(id=execution_id)))
        except Fenced:
            return None

    def renew(self, execution_id: str, attempt: int, chunks=(), truncated: bool = False,
              stages: dict[str, float] | None = None, budget: float | None = None) -> bool:
        """Heartbeat the run and append log chunks ((stream, bytes) pairs). False: fenced off or
        refused (the worker's token no longer acts on it)."""
        body = wire.RenewRequest(logs=log_chunks(chunks), truncated=truncated, stages=stages or {})
        return self._fenced_write("renew", execution_id, wire.RENEW.format(id=execution_id, attempt=attempt), body, budget)

    def input_url(self, execution_id: str, attempt: int, name: str) -> str:
        """A fresh presigned GET for one input (the one from the claim expired)."""
        path = wire.INPUT_URL.format(id=execution_id, attempt=attempt, name=quote(name, safe=""))
        return wire.InputSpec.model_validate_json(self._call("GET", path)).url

    def damaged_input(self, execution_id: str, attempt: int, name: str) -> None:
        """Tell the control plane an input's stored copy is damaged, so it is forgotten and the next
        submission uploads it anew."""
        self._call("POST", wire.DAMAGED_INPUT.format(id=execution_id, attempt=attempt, name=quote(name, safe="")))

    def output_urls(self, execution_id: str, attempt: int, files: list[tuple[str, int]]) -> dict[str, str]:
        """path -> presigned PUT, for (path, size) of each output file."""
        urls: dict[str, str] = {}
        limit = wire.OutputUrlsRequest.model_fields["files"].metadata[0].max_length
        for i in range(0, len(files), limit):
            body = wire.OutputUrlsRequest(files=[wire.OutputFile(path=p, size=s) for p, s in files[i:i + limit]])
            answer = wire.OutputUrlsResponse.model_validate_json(
                self._call("POST", wire.OUTPUT_URLS.format(id=execution_id, attempt=attempt), body))
            urls.update((u.path, u.url) for u in answer.urls)
        return urls

    def finish(self, execution_id: str, attempt: int, request: wire.FinishRequest) -> bool:
        """Commit the result. The server answers a repeated finish the same way, so a lost answer is
        simply asked again. False: fenced off (or refused), nothing committed."""
        return self._fenced_write("finish", execution_id, wire.FINISH.format(id=execution_id, attempt=attempt), request)

    def _fenced_write(self, what: str, execution_id: str, path: str, body, budget: float | None = None) -> bool:
        """A write under the attempt's fence: True when taken, False when fenced off or refused."""
        try:
            self._call("POST", path, body, budget)
            return True
        except Fenced:
            return False
        except Refused as e:
            log.warning("%s of %s refused: %s", what, execution_id, e)
            return False

    # ---- presigned transfers -----------------------------------------------------------------

    def download(self, url: str, dest: Path, sha256: str, name: str,
                 fresh_url: Callable[[], str] | None = None) -> None:
        """Stream a presigned GET into dest with constant memory, checking its sha256
        (ChecksumMismatch). An expired URL is swapped once for fresh_url()."""
        state = {"url": url, "refreshed": False}

        def once() -> str:
            digest = hashlib.sha256()
            with self.files.stream("GET", state["url"]) as r:
                if r.status_code in EXPIRED and fresh_url is not None and not state["refreshed"]:
                    r.read()
                    state["url"], state["refreshed"] = fresh_url(), True
                    raise _Transient(r.status_code, "the presigned URL expired; asked for a fresh one")
                if r.status_code in STORE_TRANSIENT:
                    r.read()
                    raise _Transient(r.status_code, r.text[:200])
                if r.status_code != 200:
                    r.read()
                    raise RuntimeError(f"the object store refused input {name!r} (HTTP {r.status_code}: "
                                       f"{r.text[:200]})")
                with open(dest, "wb") as f:
                    for chunk in r.iter_raw(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
            return digest.hexdigest()

        got = self._store_retrying(once, f"input {name!r}")
        if got != sha256:
            raise ChecksumMismatch(f"{name}: expected sha256 {sha256}, got {got}", name)

    def upload(self, url: str, path: Path, fresh_url: Callable[[], str] | None = None) -> tuple[int, str]:
        """Stream a file to a presigned PUT (with its Content-Length); returns (size, sha256) of
        what went up. The file is never followed through a symlink (a script could plant one)."""
        state = {"url": url, "refreshed": False}

        def once() -> tuple[int, str]:
            digest = hashlib.sha256()
            with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
                size = os.fstat(fh.fileno()).st_size

                def body():
                    for chunk in iter(lambda: fh.read(CHUNK), b""):
                        digest.update(chunk)
                        yield chunk

                r = self.files.put(state["url"], content=body(), headers={"Content-Length": str(size)})
            if r.status_code in EXPIRED and fresh_url is not None and not state["refreshed"]:
                state["url"], state["refreshed"] = fresh_url(), True
                raise _Transient(r.status_code, "the presigned URL expired; asked for a fresh one")
            if r.status_code in STORE_TRANSIENT:
                raise _Transient(r.status_code, r.text[:200])
            if r.status_code not in (200, 201, 204):
                raise RuntimeError(f"the object store refused the upload (HTTP {r.status_code}: {r.text[:200]})")
            return size, digest.hexdigest()

        return self._store_retrying(once, f"output {path.name!r}")

    def _store_retrying(self, fn, what: str):
        try:
            return retrying(fn, seconds=self.budget, when=_is_transient, first_wait=0.5, max_wait=2, log=log)
        except (httpx.TransportError, _Transient) as e:
            raise Unreachable(f"The object store did not serve {what} for {self.budget:.0f} s "
                              f"({type(e).__name__}: {e}).") from e

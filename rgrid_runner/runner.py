"""One execution on one worker: claim, stage, run in the sandbox, upload, commit.

Every call after the claim carries the attempt (the fencing token) and goes through the worker
API, so a run that was canceled or re-queued behind its back can neither log, nor commit outputs,
nor set a final status: the API answers 409 and the runner stops. Outputs of an attempt that was
fenced off are the control plane's to delete.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from rgrid_core.runtimes import DEFAULT_RUNTIME
from rgrid_core.states import ExecutionStatus
from rgrid_core.workerwire import CommittedOutput, FinishRequest, InputSpec

from . import container, layers, sandbox, staging
from .deadlines import DEADLINES
from .inputcache import InputCache
from .logpump import LogPump
from .settings import WorkerSettings
from .workerclient import ChecksumMismatch, Fenced, Refused, Rejected, Unreachable, WorkerClient, log_chunks

log = logging.getLogger("rgrid.runner")


@dataclass(frozen=True)
class Lease:
    execution_id: str
    attempt: int


def run_execution(execution_id: str, client: WorkerClient, settings: WorkerSettings) -> str:
    """Run execution_id if we win the claim. Returns what happened, for the orchestrator's log.

    One runner per run on a worker: the control plane answers a repeated claim of its worker again
    (an answer lost on the way must not burn the attempt), so a second task for the same run on
    the same worker (a duplicate dispatch) would take that answer as its own and run the script
    beside the first. The runner that holds the run's lock file on this worker is the only one
    that claims."""
    with RunLock(Path(settings.work_root), execution_id, settings.worker_id) as held:
        if not held:
            log.warning("claim of %s not made: another runner on this worker has it", execution_id)
            return "not-claimed"
        return _claim_and_run(execution_id, client, settings)


class RunLock:
    """An exclusive, non-blocking lock on `<work_root>/<execution id>.<worker id>.lock` for the
    duration of a run; the file goes when its holder is done (a later duplicate finds the run
    taken by then). The worker's id is in the name since the local grid's workers share one work
    root: a frozen worker's runner must not hold the run back from the worker it moved to."""

    def __init__(self, work_root: Path, execution_id: str, worker_id: str | None = None):
        self.path = self.path_of(work_root, execution_id, worker_id)
        self.fd: int | None = None

    @staticmethod
    def path_of(work_root: Path, execution_id: str, worker_id: str | None) -> Path:
        """The lock file of a run on a worker (its container carries it as a label)."""
        return Path(work_root) / f"{execution_id}.{worker_id or 'worker'}.lock"

    def __enter__(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _claim_and_run(execution_id: str, client: WorkerClient, settings: WorkerSettings) -> str:
    try:
        ex = client.claim(execution_id)
    except (Refused, Unreachable) as e:
        log.warning("claim of %s not made: %s", execution_id, e)
        return "not-claimed"
    except Exception as e:  # noqa: BLE001 - the orchestrator logs what the task returned
        log.error("claim of %s failed: %s", execution_id, _claim_error(e))
        return f"claim-failed: {_claim_error(e)}"[:300]
    if ex is None:
        return "not-claimed"
    lease = Lease(execution_id, ex.attempt)
    root = Path(settings.work_root) / f"{execution_id}-a{lease.attempt}"
    workdir = root / "work"
    try:
        shutil.rmtree(root, ignore_errors=True)
        workdir.mkdir(parents=True)
        os.chmod(settings.work_root, 0o755)  # the sandbox's own uid must reach /work
        try:
            with LeaseKeeper(client, lease, settings):
                staging.stage_inputs(_fetcher(client, lease), ex.inputs, workdir, InputCache.for_settings(settings))
        except ChecksumMismatch as e:
            # A damaged stored input must not fail every later run that reuses it: the control
            # plane forgets it, so the next submission uploads it again.
            try:
                client.damaged_input(lease.execution_id, lease.attempt, e.name)
            except Exception:  # noqa: BLE001 - the run fails with its sentence either way
                log.exception("could not report the damaged input %s of %s", e.name, execution_id)
            _finish(client, lease, ExecutionStatus.FAILED, None,
                    f"An input file's stored copy is damaged ({e}); run it again and it will be uploaded anew.", [])
            return "staging-failed"
        except Exception as e:  # noqa: BLE001 - every staging failure becomes a sentence
            _finish(client, lease, ExecutionStatus.FAILED, None, f"Could not stage the input files on the worker: {e}", [])
            return "staging-failed"
        return _run_staged(client, settings, lease, ex, workdir)
    except Exception as e:  # noqa: BLE001
        log.exception("runner failed for %s", execution_id)
        _finish(client, lease, ExecutionStatus.FAILED, None, f"The worker failed while running it: {e}", [])
        return "runner-error"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _fetcher(client: WorkerClient, lease: Lease) -> staging.Fetch:
    """Downloads through the claim's presigned URL; an expired one is exchanged for a fresh one."""
    def fetch(spec: InputSpec, dest: Path) -> None:
        client.download(spec.url, dest, spec.sha256, spec.name,
                        fresh_url=lambda: client.input_url(lease.execution_id, lease.attempt, spec.name))
    return fetch


class StageClock:
    """When this attempt's script started and its outputs began going up, on the runner's
    monotonic clock. No write of its own: the next renew or the finish carries each time, as
    "so many seconds ago", which the database turns into its own clock's time."""

    def __init__(self):
        self._began: dict[str, float] = {}
        self._written: set[str] = set()

    def begin(self, stage: str) -> None:
        self._began[stage] = time.monotonic()

    def pending(self) -> dict[str, float]:
        """stage -> seconds ago, for the stages no renew has written yet."""
        now = time.monotonic()
        return {s: now - t for s, t in self._began.items() if s not in self._written}

    def written(self, stages: dict[str, float]) -> None:
        self._written.update(stages)


def _run_staged(client: WorkerClient, settings: WorkerSettings, lease: Lease, ex, workdir: Path) -> str:
    before = staging.snapshot(workdir)
    stages = StageClock()
    limits = sandbox.Limits(
        wall_seconds=ex.timeout_seconds,
        cpu_seconds=ex.timeout_seconds + 1,
        memory_mb=settings.sandbox_memory_mb,
        max_processes=settings.sandbox_max_processes,
        max_file_mb=settings.sandbox_max_file_mb,
    )
    env = sandbox.script_env(dict(ex.env or {}))
    env.update(RGRID_EXECUTION_ID=lease.execution_id, RGRID_ATTEMPT=str(lease.attempt))
    uid = sandbox.sandbox_uid()
    try:
        if settings.docker_host:
            image = _run_image(client, settings, lease, ex, limits)
            start = _container_starter(settings, ex, workdir, env, limits, uid, image, lease.execution_id)
        else:
            start = _sandbox_starter(settings, ex, workdir, env, limits, uid)
    except Fenced:
        return "fenced"  # canceled or handed back while its image or layer was made
    except sandbox.SandboxError as e:
        _finish(client, lease, ExecutionStatus.FAILED, None, str(e), [])
        return "sandbox-error"
    # /work goes to the run's uid before any pipe exists: a failure here leaves no descriptor behind.
    sandbox.hand_over(workdir, uid)
    out_r, out_w = os.pipe()
    try:
        err_r, err_w = os.pipe()
    except OSError:
        os.close(out_r)
        os.close(out_w)
        raise
    stages.begin("running")
    try:
        proc = start(out_w, err_w)
    except sandbox.SandboxError as e:
        os.close(out_r)
        os.close(err_r)
        _finish(client, lease, ExecutionStatus.FAILED, None, str(e), [])
        return "sandbox-error"
    pump = LogPump(settings.log_limit_bytes)
    pump.start({"stdout": out_r, "stderr": err_r})
    tail = bytearray()  # last stderr bytes, to explain a failure in one line

    last = LastChunks()
    try:
        fenced, timed_out = _supervise(client, settings, lease, proc, pump, limits, tail, stages, last)
    finally:
        _kill(proc)  # whatever happened above, no sandbox outlives its runner loop
        _reap(proc)
    if fenced:
        return "fenced"
    if getattr(proc, "output_note", None):  # a container whose output broke off: its log says so
        last.chunks.append(("system", proc.output_note.encode()))
    if pump.dropped:
        last.chunks.append(("system", pump.truncation_note()))

    code = proc.returncode
    if getattr(proc, "lost", None):  # how the script ended is unknown: never an OOM nor a timeout
        status, exit_code, reason = ExecutionStatus.FAILED, None, proc.lost
    elif timed_out:
        status, exit_code, reason = ExecutionStatus.TIMED_OUT, None, f"Timed out after {limits.wall_seconds} s (raise it with --timeout)."
    elif getattr(proc, "oom_killed", False):
        status, exit_code, reason = ExecutionStatus.FAILED, _exit_code(code), _out_of_memory(limits)
    elif code == 0:
        status, exit_code, reason = ExecutionStatus.SUCCEEDED, 0, None
    else:
        status, exit_code, reason = ExecutionStatus.FAILED, _exit_code(code), _explain(code, bytes(tail), limits)
    try:
        stages.begin("uploading")
        paths = staging.changed_files(workdir, before)
        if paths and (last.chunks or last.truncated):
            # Uploads may take long: the script's last output is shown before they start.
            if not _renew_retrying(client, lease, last.chunks, settings, truncated=last.truncated):
                return "fenced"
            last.chunks, last.truncated = [], False
        with LeaseKeeper(client, lease, settings, stages):
            outputs = staging.upload_outputs(client, lease.execution_id, lease.attempt, workdir, paths)
    except Fenced:
        return "fenced"  # canceled or handed back meanwhile: nothing to commit
    except Exception as e:  # noqa: BLE001
        _finish(client, lease, ExecutionStatus.FAILED, exit_code, f"The script ran, but its output files could not be uploaded: {e}", [],
                stages, last)
        return "upload-failed"
    committed = _finish(client, lease, status, exit_code, reason, outputs, stages, last)
    if not committed:
        return "fenced"  # the control plane deletes the outputs of an attempt it fenced off
    return committed


class LeaseKeeper:
    """Renews the lease while the runner is busy with a transfer, so a slow or retrying upload is
    not mistaken for a dead runner. A refused renew sets `fenced` (a requirements build watches it
    and is killed) and is otherwise left for the next fenced call (finish) to discover.

    One daemon thread per runner process serves every keeper: starting a thread for each transfer
    cost a measurable share of a short run, and most transfers (a cached input, no outputs) are
    over long before the first renew is due. Each renew is tried once (an unreachable API is tried
    again next interval), so one keeper never holds up the others."""

    _lock = threading.Lock()
    _held: dict = {}  # Lease -> (client, renew interval, last renew, StageClock or None)
    _thread: threading.Thread | None = None
    _wake = threading.Event()  # a lease due sooner than the thread's sleep: it recomputes it at once
    # When the thread's sleep ends (monotonic): a lease due later need not wake it. Infinite while
    # it is awake, as a lease added after its look at the held ones must wake it.
    _wakes_at = float("inf")

    def __init__(self, client: WorkerClient, lease: Lease, settings: WorkerSettings,
                 stages: "StageClock | None" = None):
        self.client, self.lease, self.interval = client, lease, settings.lease_check_interval_seconds
        self.stages = stages  # its renews also carry the stage times not written yet
        self.fenced = threading.Event()  # set when a renew was refused: work done for the lease can stop

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            now = time.monotonic()
            cls._held[self.lease] = (self.client, self.interval, now, self.stages, self.fenced)
            if now + self.interval < cls._wakes_at:
                cls._wake.set()  # due before the thread wakes anyway: it recomputes its sleep
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._run, daemon=True, name="lease-keeper")
                cls._thread.start()
        return self

    def __exit__(self, *exc):
        with type(self)._lock:
            type(self)._held.pop(self.lease, None)

    @classmethod
    def _run(cls) -> None:
        while True:
            with cls._lock:
                held = dict(cls._held)
            now = time.monotonic()
            wait = 1.0
            for lease, (client, interval, last, stages, fenced) in held.items():
                if now - last < interval:
                    wait = min(wait, interval - (now - last))
                    continue
                times = stages.pending() if stages else None
                try:
                    kept = client.renew(lease.execution_id, lease.attempt, stages=times, budget=0)
                    if kept and stages:
                        stages.written(times)
                except Exception:  # noqa: BLE001 - the API away for a moment: try again next interval
                    kept = True
                with cls._lock:
                    if lease in cls._held:
                        if kept:
                            cls._held[lease] = (client, interval, time.monotonic(), stages, fenced)
                        else:
                            del cls._held[lease]
                            fenced.set()
                wait = min(wait, interval)
            with cls._lock:
                cls._wakes_at = time.monotonic() + max(0.01, wait)
            cls._wake.wait(max(0.01, wait))
            with cls._lock:
                cls._wakes_at = float("inf")
                cls._wake.clear()


def _sandbox_starter(settings: WorkerSettings, ex, workdir: Path, env: dict, limits: sandbox.Limits, uid):
    """The script under bubblewrap, with the worker's own interpreter."""
    if getattr(ex, "requirements", None):
        raise sandbox.SandboxError("--requirements needs a worker with Docker, and this one runs python:3.11 in "
                                   "bubblewrap without it; run it on a grid whose workers have Docker.")
    if ex.runtime not in sandbox.RUNTIME_INTERPRETERS:
        raise sandbox.SandboxError(f"Runtime {ex.runtime} needs Docker, which this worker does not have; "
                                   f"run it with --runtime {DEFAULT_RUNTIME} or on a worker with Docker.")
    interpreter = sandbox.resolve_interpreter(ex.runtime)
    cmd = sandbox.bwrap_command(workdir, interpreter, ex.script, list(ex.args))
    cmd = sandbox.limited_command(cmd, limits, uid)

    def start(out_w: int, err_w: int) -> subprocess.Popen:
        if settings.sandbox_niceness is not None:
            sandbox.set_spawn_niceness(settings.sandbox_niceness)
        # No preexec_fn, user or group: Python then starts it with vfork (see limited_command).
        try:
            return subprocess.Popen(
                cmd,
                env=env,  # passed through bwrap's environment, never on a command line `ps` can show
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        finally:
            os.close(out_w)
            os.close(err_w)

    return start


def _run_image(worker: WorkerClient, settings: WorkerSettings, lease: Lease, ex, limits: sandbox.Limits) -> str:
    """The image the run's container starts from: its runtime's (pulled now if the worker lacks
    it), or the layer of its requirements file on it (built, pulled or already here: the run's log
    says which). The lease is kept meanwhile; Fenced when the run was canceled or handed back (a
    build under way is killed then)."""
    runtime = container.runtime_of(ex.runtime)
    client = _docker(settings.docker_host)
    with LeaseKeeper(worker, lease, settings) as keeper:
        image = container.ensure_image(client, runtime, settings.image_registry, getattr(ex, "image_digest", None))
    if keeper.fenced.is_set():
        raise Fenced()
    if not getattr(ex, "requirements", None):
        return image
    try:
        with LeaseKeeper(worker, lease, settings) as keeper:
            layer = layers.ensure_layer(client, runtime, image, ex.requirements, settings.image_registry,
                                        Path(settings.work_root) / "layers", limits,
                                        scope=getattr(ex, "layer_scope", None), stop=keeper.fenced)
    except layers.BuildStopped:
        raise Fenced() from None
    except sandbox.SandboxError:
        raise
    except Exception as e:  # noqa: BLE001 - the engine or the registry failing mid-way, as a sentence
        raise layers.RequirementsError(f"The layer for requirements.txt could not be made on {runtime.name} "
                                       f"({type(e).__name__}: {e}); try the run again.") from e
    log.info("execution %s: requirements layer %s (%s in %.1f s)", lease.execution_id, layer.image, layer.how,
             layer.seconds)
    if keeper.fenced.is_set() or not _renew_retrying(worker, lease, [("system", layer.note().encode())], settings):
        raise Fenced()  # canceled or handed back while the layer was made: no script starts
    return layer.image


def _container_starter(settings: WorkerSettings, ex, workdir: Path, env: dict, limits: sandbox.Limits, uid,
                       image: str, lease_id: str):
    """The script in a container of `image` (its runtime's, or its requirements layer)."""
    runtime = container.runtime_of(ex.runtime)
    client = _docker(settings.docker_host)
    labels = container.run_labels(RunLock.path_of(Path(settings.work_root), lease_id, settings.worker_id))

    def start(out_w: int, err_w: int) -> container.ContainerRun:
        try:
            return container.ContainerRun(client, image, runtime, ex.script, list(ex.args), workdir, env,
                                          limits, uid, out_w, err_w, labels)
        except sandbox.SandboxError:
            raise
        except Exception as e:  # noqa: BLE001 - the engine's refusal, as a sentence
            raise sandbox.SandboxError(f"The container could not start ({type(e).__name__}: {str(e)[:300]}); run it "
                                       "again, and if it keeps failing, tell the grid's operator.") from e

    return start


_docker_clients: dict[str, object] = {}
_docker_clients_lock = threading.Lock()


def _docker(host: str):
    """One Docker client per engine per worker process (its connection pool is reused by every run;
    the lock keeps two runs starting at once from each making one)."""
    with _docker_clients_lock:
        if host not in _docker_clients:
            _docker_clients[host] = container.docker_client(host)
        return _docker_clients[host]


class ExitWatch:
    """Sleeps until a process exits or a timeout passes, waking the moment it exits.

    Popen.wait(timeout) polls with sleeps that double up to 50 ms: a script ending at 21 ms was
    noticed at 31 ms, one ending at 32 ms at 63 ms, and the slot sat idle meanwhile. A pidfd
    (Linux 5.3+) becomes readable when the process exits, so select() on it wakes at once; where
    there is none, Popen.wait is the fallback. A ContainerRun has no process here (the script is
    the engine's child): its wait(timeout) wakes on its waiter's event the moment the engine says
    it ended."""

    def __init__(self, proc: "subprocess.Popen | container.ContainerRun"):
        self.proc = proc
        self.fd: int | None = None
        if isinstance(proc, subprocess.Popen):
            try:
                self.fd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):  # no pidfd_open (Python or Linux too old)
                self.fd = None

    def wait(self, timeout: float) -> None:
        if self.fd is not None:
            select.select([self.fd], [], [], timeout)
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class LastChunks:
    """What the script wrote after it ended (read from its pipes once it had exited): the finish
    carries it, so a short run that prints costs no renew of its own."""
    chunks: list = field(default_factory=list)
    truncated: bool = False


def _supervise(client, settings, lease, proc, pump: LogPump, limits: sandbox.Limits, tail: bytearray,
               stages: StageClock, last: LastChunks):
    """Pump logs, renew the lease, enforce the wall clock. Returns (fenced, timed_out).

    The wall clock is also a deadline of its own (rgrid_runner.deadlines): a renew riding out an
    API outage blocks the loop, and the script must not outlive its timeout meanwhile."""
    watch = ExitWatch(proc)
    expired = threading.Event()

    def expire() -> None:
        if proc.poll() is None:
            expired.set()
            _kill(proc)

    timer = DEADLINES.after(limits.wall_seconds, expire)
    try:
        fenced, timed_out = _supervise_loop(client, settings, lease, proc, pump, limits, tail, watch, stages, last)
        return fenced, timed_out or expired.is_set()
    finally:
        timer.cancel()
        watch.close()


def _supervise_loop(client, settings, lease, proc, pump: LogPump, limits: sandbox.Limits, tail: bytearray,
                    watch: ExitWatch, stages: StageClock, last: LastChunks):
    started = time.monotonic()
    last_renew = started  # the claim itself just renewed the lease
    timed_out = False
    while True:
        exited = proc.poll() is not None
        now = time.monotonic()
        if not timed_out and not exited and now - started > limits.wall_seconds:
            timed_out = True
            _kill(proc)
        if (timed_out and not exited and isinstance(proc, container.ContainerRun)
                and now - started > limits.wall_seconds + container.STOP_WAIT):
            proc.give_up()  # killed, yet the engine says nothing: the run is lost, and the loop ends
            exited = True
        chunks, newly_truncated = pump.take()
        for stream, data in chunks:
            if stream == "stderr":
                tail.extend(data)
                del tail[:-4096]
        if newly_truncated:
            pump.truncation_noted = True
        if exited:
            # Read after the script ended: the finish carries them (LastChunks). Until it has gone,
            # renews carry what it writes, so a follower sees a long run's output as it comes.
            last.chunks.extend(chunks)
            last.truncated = last.truncated or newly_truncated
        elif chunks or newly_truncated or now - last_renew >= settings.lease_check_interval_seconds:
            # The first renew of the run also records when the script started (a script that ends
            # before any renew has it recorded by finish).
            times = stages.pending()
            if not _renew_retrying(client, lease, chunks, settings, truncated=newly_truncated, stages=times):
                return True, timed_out
            stages.written(times)
            last_renew = now
        if exited:
            if pump.drained():
                return False, timed_out
            pump.join(settings.log_flush_interval_seconds)  # the readers end right after the pipes close
        else:
            # Wakes the moment the script ends: a quick script must not hold its slot for a tick.
            watch.wait(settings.log_flush_interval_seconds)


def _renew_retrying(client: WorkerClient, lease: Lease, chunks, settings, truncated: bool = False,
                    stages=None) -> bool:
    """renew() through an API outage (503: the outage budget; unreachable: the shorter unreachable
    budget, below dead_after); False (fenced off) after a longer one: by then the control plane may
    have handed the run to another worker, so the caller kills the script."""
    try:
        return client.renew(lease.execution_id, lease.attempt, chunks, truncated=truncated, stages=stages)
    except Exception:  # noqa: BLE001
        log.exception("the control plane was unreachable for too long; giving up %s", lease.execution_id)
        return False


def _finish(client: WorkerClient, lease: Lease, status: str, exit_code: int | None, reason: str | None,
            outputs: list[CommittedOutput], stages: StageClock | None = None,
            last: LastChunks | None = None) -> str | None:
    """finish() through an API outage as long as the outage budget. The API answers a repeated
    finish as the first, so a try whose answer was lost is simply made again rather than taken
    for being fenced off. Returns the status committed (a finish answered 400 is committed failed
    with the control plane's sentence); None: fenced off (or given up), nothing committed."""
    request = FinishRequest(status=status, exit_code=exit_code, reason=reason[:4000] if reason else None,
                            outputs=outputs, stages=stages.pending() if stages else {},
                            logs=log_chunks(last.chunks) if last else [], truncated=bool(last and last.truncated))
    try:
        return status if client.finish(lease.execution_id, lease.attempt, request) else None
    except Rejected as e:
        if status == ExecutionStatus.FAILED and not outputs:
            log.error("finish of %s attempt %d rejected: %s", lease.execution_id, lease.attempt, e)
            return None
        # The result cannot be committed as reported (an output not in the store): the run fails
        # with the control plane's sentence now, rather than waiting for its lease to expire.
        log.warning("finish of %s rejected (%s); finishing it failed", lease.execution_id, e)
        return _finish(client, lease, ExecutionStatus.FAILED, exit_code,
                       f"The script ran, but its result could not be committed: {e.sentence}", [], stages, last)
    except Exception:  # noqa: BLE001 - nothing more a runner can do; the lease expires and the sweep decides
        log.exception("could not finish %s attempt %d", lease.execution_id, lease.attempt)
        return None


def _claim_error(e: Exception) -> str:
    """A failed claim, told without its values: the answer holds the run's env, and a pydantic
    error (or a traceback) would carry one into logs and Ray results. The error's type, the
    fields it names, or the control plane's own sentence."""
    if isinstance(e, ValidationError):
        fields = sorted({".".join(str(p) for p in err.get("loc", ())) or "the answer" for err in e.errors()})
        return f"ValidationError: the claim answer does not match the wire ({', '.join(fields)[:200]})"
    if type(e) in (RuntimeError, Rejected):  # workerclient's own: the control plane's sentence, no values
        return str(e)
    return type(e).__name__


def _kill(proc) -> None:
    if isinstance(proc, container.ContainerRun):
        proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(proc) -> None:
    """Wait for the killed script. A container's wait is bounded: an engine that neither ends nor
    reports it must not hold the runner (and its slot) for good; the run then counts as lost."""
    if not isinstance(proc, container.ContainerRun):
        proc.wait()
        return
    try:
        proc.wait(container.STOP_WAIT)
    except subprocess.TimeoutExpired:
        log.error("the Docker engine did not end the container of a run within %.0f s", container.STOP_WAIT)
        proc.give_up()
    proc.close()


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def _out_of_memory(limits: sandbox.Limits) -> str:
    return f"Out of memory: the script exceeded the {limits.memory_mb} MB memory limit."


def _explain(code: int, stderr_tail: bytes, limits: sandbox.Limits) -> str:
    text = stderr_tail.decode("utf-8", "replace")
    if text.lstrip().startswith(("bwrap:", "prlimit:", "setpriv:")):
        return "The sandbox could not start: " + text.strip().splitlines()[-1]
    if "MemoryError" in text or code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return _out_of_memory(limits)
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return f"CPU time limit of {limits.cpu_seconds} s exceeded."
    return f"The script exited with code {_exit_code(code)}."

"""The Docker runtime: a script in a container of its runtime's catalogue image, with the sandbox's
guarantees (no network, a read-only image, /work the only writable place plus a private /tmp,
memory, process and file-size limits, the run's own uid when the worker runs as root).

A ContainerRun looks to the runner like the sandbox's process (poll, wait, returncode, kill), and
its output arrives on two pipes, so log pumping, the lease loop and the wall clock are the same
code for both runtimes. The output is followed from Docker's json-file log of the container (kept
to 2 x 16 MB, removed with the container) as one stream of both outputs, in the order written:
a follower per output would lose the order between them.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

from rgrid_core.runtimes import CATALOGUE, Runtime

from .sandbox import Limits, SandboxError

log = logging.getLogger("rgrid.container")

TMP_MB = 512  # the private /tmp, in memory, counted against the memory limit
# /dev/shm: Docker's default is a 64 MB writable tmpfs. The run gets a private one of 1 MB, no exec,
# enough for the POSIX semaphores of multiprocessing and joblib and nothing more.
SHM_MB = 1
STOP_WAIT = 30.0  # seconds the runner waits for a killed container's exit before it gives up on the engine
ENGINE_LOST = "The worker lost its Docker engine while the script ran; run it again."
LABEL_RUN, LABEL_LOCK = "org.rgrid.run", "org.rgrid.lock"


def docker_client(host: str):
    try:
        import docker
    except ImportError as e:
        raise SandboxError("This worker lacks the docker Python package; install rgrid's 'service' extra.") from e
    try:
        return docker.DockerClient(base_url=host, version="auto", timeout=120)
    except docker.errors.DockerException as e:
        raise SandboxError(f"This worker cannot reach its Docker engine at {host} ({e}); run it again, and if it "
                           "keeps failing, tell the grid's operator (the engine must run on every worker).") from e


def runtime_of(name: str) -> Runtime:
    if name not in CATALOGUE:
        raise SandboxError(f"Unknown runtime {name!r}. Valid runtimes: {', '.join(CATALOGUE)}.")
    return CATALOGUE[name]


NO_DIGEST = ("This worker runs no {name} image: the control plane published no digest for it, so the image in "
             "the registry cannot be checked. Pick another runtime with --runtime, and tell the grid's operator to "
             "rebuild the runtime images (`python -m rgrid_service.images`) and set the control plane's "
             "RGRID_IMAGE_DIGESTS_FILE to the digests file it writes.")
MISMATCH = ("The image of runtime {name} in the registry at {registry} is not the one its builder recorded "
            "({digest}): it was overwritten or the registry was rebuilt. It is not run. Tell the grid's operator to "
            "rebuild the runtime images with `python -m rgrid_service.images` and restart the control plane's API.")


def pinned_reference(runtime: Runtime, registry: str, digest: str) -> str:
    """`<registry>/<repository>@<digest>`: the one image of the runtime this worker runs."""
    return f"{registry}/{runtime.repository}@{digest}"


def ensure_image(client, runtime: Runtime, registry: str, digest: str | None) -> str:
    """The runtime's image by its digest, pulled from the registry if this worker does not have it
    yet, and checked: its RepoDigests must hold the digest the builder recorded. Returns the
    pinned reference (<registry>/<repository>@<digest>), which runs exactly that image whatever a
    tag in the registry says now. No digest (an old control plane, or none recorded) or another
    image: SandboxError with a sentence, and nothing runs."""
    import docker

    if not digest:
        raise SandboxError(NO_DIGEST.format(name=runtime.name))
    reference = pinned_reference(runtime, registry, digest)
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(reference)
        except docker.errors.NotFound as e:
            raise SandboxError(MISMATCH.format(name=runtime.name, registry=registry, digest=digest)) from e
        except docker.errors.APIError as e:
            raise SandboxError(f"The image of runtime {runtime.name} could not be pulled from {registry} "
                               f"({e.explanation or e}); run it again later or pick another runtime with "
                               "--runtime, and if it keeps failing, tell the grid's operator.") from e
    if reference not in (image.attrs.get("RepoDigests") or []):
        raise SandboxError(MISMATCH.format(name=runtime.name, registry=registry, digest=digest))
    return reference


def held_images(client, registry: str, digests: dict[str, str]) -> list[dict]:
    """The catalogue images this worker's engine holds by their published digest, as its
    registration reports them (rgrid_core.workerwire.RuntimeImage): a runtime without a digest, or
    whose image here is another, is not held (its runs would be refused)."""
    import docker

    held = []
    for runtime in CATALOGUE.values():
        if not digests.get(runtime.name):
            continue
        reference = pinned_reference(runtime, registry, digests[runtime.name])
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            continue
        if reference not in (image.attrs.get("RepoDigests") or []):
            continue
        held.append({"runtime": runtime.name, "tag": runtime.tag, "size_bytes": int(image.attrs.get("Size") or 0)})
    return held


def prepull(client, registry: str, digests: dict[str, str], names=None) -> tuple[list[str], list[str]]:
    """Pull and check every catalogue image that has a digest (a worker at boot), so no first run
    waits for a pull. Returns (the pinned references, the sentences of the runtimes it refused)."""
    pulled, refused = [], []
    for name in names or CATALOGUE:
        if not digests.get(name):
            refused.append(NO_DIGEST.format(name=name))
            continue
        pulled.append(ensure_image(client, CATALOGUE[name], registry, digests[name]))
    return pulled, refused


def _wait_read(fd: int, limit: float = 1.0) -> None:
    """Until the pipe of write end `fd` is empty (its reader has taken everything), at most `limit` s."""
    import termios

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return
        if waiting == 0:
            return
        time.sleep(0.0005)


def run_labels(lock_path: Path) -> dict[str, str]:
    """A run container's labels: the run lock file its runner holds while the container may live,
    so a container whose lock nobody holds is a leftover (remove_leftovers)."""
    return {LABEL_RUN: "1", LABEL_LOCK: str(lock_path)}


def lock_is_held(path: Path) -> bool:
    """Whether a runner holds the flock on `path` (a missing file: nobody does). The probe takes
    the lock for an instant and never creates the file."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock the probe took
    return False


def remove_leftovers(client, work_root: Path) -> list[str]:
    """Remove the run containers of runners under `work_root` that have gone (killed, crashed, a
    worker restarted): their run lock is no longer held. A requirements build's containers carry
    their build's lock the same way (rgrid_runner.layers). bubblewrap dies with its runner; a
    container does not. Containers of other work roots on a shared engine are left alone.
    Returns the names removed."""
    root = str(Path(work_root)) + os.sep
    removed = []
    for found in client.containers.list(all=True, filters={"label": LABEL_LOCK}):  # runs' and builds'
        lock = (found.labels or {}).get(LABEL_LOCK)
        if not lock or not lock.startswith(root) or lock_is_held(Path(lock)):
            continue
        try:
            found.remove(force=True)
            removed.append(found.name)
        except Exception:  # noqa: BLE001 - gone meanwhile; the next sweep tries any other again
            pass
    return removed


def sweep_leftovers(docker_host: str | None, work_root: str) -> list[str]:
    """remove_leftovers on this worker's engine (the node before its pull, the agent every minute);
    an engine that does not answer is logged and tried again at the next sweep."""
    if not docker_host:
        return []
    try:
        removed = remove_leftovers(docker_client(docker_host), Path(work_root))
    except Exception as e:  # noqa: BLE001
        log.warning("could not look for leftover run containers: %s", e)
        return []
    if removed:
        log.warning("removed %d run containers whose runner had gone: %s", len(removed), ", ".join(removed))
    return removed


class ContainerRun:
    """One script in one container, started at once; killed by kill(), removed by close()."""

    def __init__(self, client, image: str, runtime: Runtime, script: str, args: list[str], workdir: Path,
                 env: dict[str, str], limits: Limits, uid: int | None, stdout_fd: int, stderr_fd: int,
                 labels: dict[str, str] | None = None):
        import docker

        self._client = client
        self.returncode: int | None = None
        self.oom_killed = False
        self.lost: str | None = None  # why the engine could not tell how the script ended
        self.output_note: str | None = None  # the output broke off: a system line for the run's log
        self._closing = False
        self._exited = threading.Event()
        # The pipes' write ends are this run's until it is closed: a follower writes and closes
        # them only under the lock and while they are open, so none can touch a number that a
        # later run's pipe has taken (close() takes back those of a follower that outlived it).
        self._pipes_lock = threading.Lock()
        self._open_pipes = {stdout_fd, stderr_fd}
        self._followers: list[threading.Thread] = []
        self.container = None
        try:
            self.container = self._create(client, docker, image, runtime, script, args, workdir, env, limits, uid,
                                          labels or {LABEL_RUN: "1"})
            self.container.start()
        except Exception:
            self.close()
            raise
        # One follower for both outputs: it closes the pipes when the container's output ends.
        self._followers = [threading.Thread(target=self._follow, args=(stdout_fd, stderr_fd), daemon=True)]
        for follower in self._followers:
            follower.start()
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    @staticmethod
    def _create(client, docker, image: str, runtime: Runtime, script: str, args: list[str], workdir: Path,
                env: dict[str, str], limits: Limits, uid: int | None, labels: dict[str, str]):
        mem = limits.memory_mb * 1024 * 1024
        size = limits.max_file_mb * 1024 * 1024
        user = uid if uid is not None else os.getuid()
        return client.containers.create(
            image, [*runtime.command, script, *args],
            user=f"{user}:{user}", environment=env, working_dir="/work",
            network_mode="none", read_only=True,
            volumes={str(workdir): {"bind": "/work", "mode": "rw"}},
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMP_MB}m,mode=1777",
                   "/dev/shm": f"rw,nosuid,nodev,noexec,size={SHM_MB}m,mode=1777"},
            mem_limit=mem, memswap_limit=mem, pids_limit=limits.max_processes,
            ulimits=[docker.types.Ulimit(name="fsize", soft=size, hard=size),
                     docker.types.Ulimit(name="core", soft=0, hard=0),
                     docker.types.Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds + 5)],
            cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
            # Output is followed from the engine's log of the container, from its first byte, so a
            # script that prints and exits at once loses nothing however late its follower starts.
            log_config=docker.types.LogConfig(type="json-file", config={"max-size": "16m", "max-file": "2"}),
            stdin_open=False, tty=False,
            labels=labels,
        )

    def _frames(self):
        """(stream, bytes) from the engine's multiplexed log of the container, from its first byte
        to its end: each frame has an 8-byte header, the stream (1 stdout, 2 stderr) and the length.
        docker-py's logs() drops the stream of each frame, so the request is made here with its
        client's own helpers."""
        api = self._client.api
        answer = api._get(api._url("/containers/{0}/logs", self.container.id), stream=True,
                          params={"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 0, "tail": "all"})
        api._raise_for_status(answer)
        api._disable_socket_timeout(api._get_raw_response_socket(answer))
        try:
            while True:
                header = answer.raw.read(8)
                if len(header) < 8:
                    return
                stream, length = struct.unpack(">BxxxL", header)
                data = answer.raw.read(length) if length else b""
                if len(data) < length:
                    raise ConnectionError("the engine's log stream ended inside a frame")
                yield stream, data
        finally:
            answer.close()

    def _follow(self, stdout_fd: int, stderr_fd: int) -> None:
        """Both outputs into the runner's pipes, in order. Before it writes to the other pipe, the
        follower waits (up to a second) until the log pump has read everything from the one it
        wrote to last, so the pump queues the outputs in the order the script wrote them."""
        last = None
        try:
            for stream, data in self._frames():
                fd = stderr_fd if stream == 2 else stdout_fd
                if last is not None and fd != last:
                    _wait_read(last)
                with self._pipes_lock:
                    if fd not in self._open_pipes:
                        return
                    os.write(fd, data)  # the log pump reads its pipes to their end: this never blocks for good
                last = fd
        except Exception as e:  # noqa: BLE001 - the engine went away, or the container was removed under us
            if not self._closing:
                log.warning("following the output of container %s failed: %s", self.container.id, e)
                self.output_note = ("\n[rgrid] the script's output could not be followed to its end "
                                    f"({type(e).__name__}); what it wrote after this point is missing.\n")
        finally:
            for fd in (stdout_fd, stderr_fd):
                self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        with self._pipes_lock:
            if fd in self._open_pipes:
                self._open_pipes.discard(fd)
                os.close(fd)

    def _wait(self) -> None:
        code = None
        try:
            code = self.container.wait()["StatusCode"]
        except Exception as e:  # noqa: BLE001 - the wait broke off: the container's state says whether it ended
            log.warning("waiting for container %s failed: %s", getattr(self.container, "id", "?"), e)
        try:
            self.container.reload()
            state = self.container.attrs["State"]
            self.oom_killed = bool(state.get("OOMKilled"))
            if code is None and not state.get("Running"):
                code = int(state.get("ExitCode", 0))
        except Exception:  # noqa: BLE001 - the engine is away or the container gone with it
            pass
        if code is None:
            self.lost = ENGINE_LOST
            code = -1
        self.returncode = code
        self._exited.set()

    def give_up(self) -> None:
        """The engine did not end the killed container in time: the run counts as lost to the
        engine, and its output ends here (a follower stuck in the engine would keep the log pump
        waiting for the pipes' end)."""
        if not self._exited.is_set():
            self.lost = ENGINE_LOST
            self.returncode = -1
            self._exited.set()
        for fd in list(self._open_pipes):
            self._close_pipe(fd)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired("container", timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL to the whole container (timeout, cancel, fencing, the runner ending); it stays
        until close(), so its exit and OOM state can still be read. A kill the engine refuses is
        tried once more, then the container is removed by force; if that fails too, the runner's
        bounded wait (STOP_WAIT) gives up on it."""
        import docker

        for _ in range(2):
            if self.returncode is not None:
                return
            try:
                self.container.kill()
                return
            except docker.errors.NotFound:
                return  # gone: its waiter ends
            except docker.errors.APIError as e:
                if e.status_code == 409:  # not running: it has just ended
                    return
                log.warning("kill of container %s failed: %s", self.container.id, e)
            except Exception as e:  # noqa: BLE001 - the engine unreachable for a moment
                log.warning("kill of container %s failed: %s", self.container.id, e)
            time.sleep(0.5)
        try:
            self.container.remove(force=True)
        except Exception as e:  # noqa: BLE001 - the engine is gone: the bounded wait ends the run
            log.warning("forced removal of container %s failed: %s", self.container.id, e)

    def close(self) -> None:
        """Remove the container, once it has been waited for, and end its output followers: each
        closes its pipe end when it ends, and one outliving the run would close a number the next
        run's pipe has taken by then (a canceled run's did, and every later run lost its output).
        After close() this run holds no descriptor, whatever its followers still do."""
        self._closing = True
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for follower in self._followers:
            follower.join(30)
        for fd in list(self._open_pipes):  # a follower still stuck in the engine: its pipe ends here
            self._close_pipe(fd)

"""The local grid's Docker: a private engine and the runtime images' registry for its workers.

When this machine can run Docker (root, Debian's docker.io and docker-registry installed) and
RGRID_LOCAL_DOCKER is not false, `rgrid local up` starts both (rgrid_service.dockerhost) and hands
their addresses to every worker (RGRID_DOCKER_HOST, RGRID_IMAGE_REGISTRY), which then pulls every
catalogue image before it becomes active and runs scripts in containers. Otherwise workers keep
python:3.11 in bubblewrap. RGRID_DOCKER_HOST already set names an engine of the user's own: the
grid starts none.

The registry serves the image cache (~/.cache/rgrid/registry); a catalogue image it lacks is built
from Debian's packages on the first start. The engine keeps its data under ~/.cache/rgrid/local-docker,
so images one grid pulled are there for the next; a second grid running at the same time gets an
engine of its own under /tmp. dockerd is slow to stop (it stops its containers first): SIGTERM, a
long wait, then SIGKILL and whatever it left (container shims and their processes).

A pid is signalled only when /proc says it is the dockerd of that folder (`--data-root <base>/data`),
never on the strength of a pid file or an old state file alone: a pid reused by another process,
or another grid's engine, is left alone. Choosing the folder and starting the engine happen under a
file lock, so two grids starting at once do not both take the shared folder.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid_core.localstate import GridState, alive

from ..dockerhost import DockerEngine, DockerUnavailable, Registry, cache_dir
from .layout import home_tag, local_dir, short_root
from .procs import process_table

ENGINE_STOP_GRACE = 30.0  # dockerd's own shutdown waits up to 15 s for each container it stops
# containerd's sockets live under the engine's folder: a Unix socket path holds at most 107 bytes.
MAX_BASE = 60
NO_DOCKER = "scripts run in bubblewrap (python:3.11 only)"


@dataclass
class LocalDocker:
    engine_pid: int
    registry_pid: int
    host: str
    registry: str
    base: str


def why_not(settings) -> str | None:
    """Why the grid starts no Docker for its workers, with what would change that (a clause the
    caller completes: a note that workers keep bubblewrap, or a failed start), or None when it does."""
    if settings.docker_host:
        return f"the workers use the Docker engine at {settings.docker_host} (RGRID_DOCKER_HOST)"
    if settings.local_docker is False:
        return "RGRID_LOCAL_DOCKER is off"
    lacking = [pkg for tool, pkg in (("dockerd", "docker.io"), ("docker-registry", "docker-registry"))
               if not shutil.which(tool)]
    if lacking:
        return f"Docker is not installed; apt-get install {' '.join(lacking)}"
    if os.geteuid() != 0:
        return "the grid's own Docker engine needs root; start the grid as root"
    return None


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
    except OSError:
        return []


def is_engine(pid: int, base: Path) -> bool:
    """Whether pid is a running dockerd whose data root is `<base>/data` (what start() runs)."""
    if not pid or not alive(pid):
        return False
    argv = _argv(pid)
    if not argv or os.path.basename(argv[0]) != "dockerd":
        return False
    data = str(Path(base) / "data")
    return any(a == "--data-root" and b == data for a, b in zip(argv, argv[1:])) or f"--data-root={data}" in argv


def engine_base(home: Path) -> Path:
    """The shared engine folder in the cache, unless another grid's engine runs there (or its path
    is too long for the engine's sockets): then one of this grid's own. Call it under choosing()."""
    shared = cache_dir() / "local-docker"
    in_use = False
    try:
        in_use = is_engine(int((shared / "docker.pid").read_text().strip()), shared)
    except (OSError, ValueError):
        pass
    if not in_use and len(str(shared)) <= MAX_BASE:
        return shared
    return short_root() / f"rgrid-docker-{home_tag(home)}"


@contextmanager
def choosing():
    """An exclusive lock for choosing an engine folder and starting its engine: a second grid
    starting meanwhile waits, then finds the shared folder's engine running."""
    lock = cache_dir() / "local-docker.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start(home: Path, on_step) -> LocalDocker:
    """Start the engine and the registry, build any catalogue image the registry lacks, and return
    what the state records. Raises DockerUnavailable (a sentence) when it cannot; nothing stays running then."""
    from rgrid_core.runtimes import CATALOGUE

    from .. import images

    registry = Registry(images.registry_storage(), local_dir(home) / "registry")
    engine = None
    try:
        with choosing():
            engine = DockerEngine(engine_base(home))
            engine.start()
        registry.start()
        lacking = [name for name, r in CATALOGUE.items() if not registry.has(r.repository, r.tag)]
        if lacking:
            if not shutil.which("mmdebstrap"):
                raise DockerUnavailable(f"the runtime images {', '.join(lacking)} are not built and building them "
                                        "needs Debian's mmdebstrap (apt-get install mmdebstrap)")
            on_step(f"runtime images ({', '.join(lacking)}: built once from Debian's packages, which takes minutes)")
        # Every image, the cached ones too, so the digests file names each (the API publishes it).
        images.build_all(engine.client(), registry, list(CATALOGUE), report=lambda line: None,
                         digests_file=digests_file())
    except BaseException as e:
        registry.stop()
        if engine is not None:
            engine.stop()
        if isinstance(e, images.BuildError):
            raise DockerUnavailable(str(e).splitlines()[0]) from e
        raise
    return LocalDocker(engine.proc.pid, registry.proc.pid, engine.host, registry.address, str(engine.base))


def record(state: GridState, docker: LocalDocker) -> None:
    state.pids["docker"] = docker.engine_pid
    state.pids["registry"] = docker.registry_pid
    state.docker_host, state.image_registry, state.docker_base = docker.host, docker.registry, docker.base


def digests_file() -> Path:
    """The runtime images' digests, beside the image cache the grid's registry serves."""
    from rgrid_core.imagedigests import digests_file_for

    from .. import images

    return digests_file_for(images.registry_storage())


def control_plane_env(state: GridState, env: dict[str, str]) -> dict[str, str]:
    """What the grid's API learns of its workers' Docker (its own, or an engine of the person's,
    RGRID_DOCKER_HOST): the digests it hands the workers, from the file beside the image cache
    unless RGRID_IMAGE_DIGESTS_FILE names another."""
    if env.get("RGRID_IMAGE_DIGESTS_FILE") or not (state.docker_host or env.get("RGRID_DOCKER_HOST")):
        return {}
    return {"RGRID_IMAGE_DIGESTS_FILE": str(digests_file())}


def worker_env(state: GridState) -> dict[str, str]:
    """What every grid process (the workers among them) learns of the grid's Docker."""
    if not state.docker_host:
        return {}
    return {"RGRID_DOCKER_HOST": state.docker_host, "RGRID_IMAGE_REGISTRY": state.image_registry}


def _engine_pid(state: GridState) -> int | None:
    """The state's engine pid, if that process still is the engine of the state's folder."""
    pid = state.pids.get("docker")
    if pid and state.docker_base and is_engine(pid, Path(state.docker_base)):
        return pid
    return None


def begin_stop(state: GridState) -> None:
    """SIGTERM to the engine alone (not its group), so it stops its containers and its containerd
    itself; stop() waits for it."""
    pid = _engine_pid(state)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def stop(state: GridState, grace: float = ENGINE_STOP_GRACE) -> None:
    """The engine gone: SIGTERM, up to `grace` seconds, SIGKILL, then whatever it left behind."""
    if not state.docker_base:
        return
    base = Path(state.docker_base)
    pid = _engine_pid(state)
    if pid:
        begin_stop(state)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and is_engine(pid, base):
            time.sleep(0.2)
        if is_engine(pid, base):  # checked again: the pid must not have gone to another process
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    kill_leftovers(base)


CONTAINERD = ("containerd", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2")


def _names_folder(argv: list[str], base: Path) -> bool:
    """A containerd or shim whose arguments include the folder or a path in it, as a whole argument."""
    if not argv or os.path.basename(argv[0]) not in CONTAINERD:
        return False
    folder = str(base)
    return any(arg == folder or arg.startswith(folder + "/") for arg in argv[1:])


def kill_leftovers(base: Path) -> None:
    """The engine's containerd and the shims of containers a killed engine never stopped (a
    containerd or containerd-shim process with a path in the engine's folder as an argument),
    and the containers' processes under those shims. No other process is touched."""
    ours = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _names_folder(_argv(int(entry)), base):
            ours.add(int(entry))
    if not ours:
        return
    table = process_table()
    children = {pid for pid, (parent, *_rest) in table.items() if parent in ours}
    for pid in [*children, *ours]:  # a container's init first, then its shim
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

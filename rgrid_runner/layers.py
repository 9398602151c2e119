"""A run's requirements.txt as a layer on its runtime's image, built once per tenant for the fleet.

Only package names, extras, version specifiers and markers are accepted (rgrid_core.requirements:
the CLI, the API and this module check it again), and the layer is keyed by the normalised text.
Its image is named by a hash of the tenant, the runtime's tag and that text's sha256
(`<registry>/rgrid/req-<tenant hash>-<runtime>:<runtime tag>-<text hash>`), so every worker agrees
on it without asking anyone and one tenant's layer never serves another tenant's run. A worker uses
its own copy when it has one, else pulls it from the registry, else builds it and pushes it there.
Builds of one layer on one worker take a file lock, so concurrent runs asking for it build it once.

The build has two steps, each in a container of the runtime's image with the worker's own pip
mounted read-only (the images carry none), all capabilities dropped:
1. download: `pip download --only-binary=:all:` fetches wheels for the image's own Python and
   platform, on the host's network (PyPI, or the index the worker's pip settings name, through a
   pip.conf and a copy of the CA file in the build's folder), as an unprivileged uid, with nothing
   of the worker's mounted but pip, that folder and the folder the wheels go to;
2. install: `pip install --no-index --find-links` installs those wheels into the image with no
   network at all (as root: the image's site-packages are root's), and that container is the layer.
Installing a wheel runs no code of the package, and neither step can reach anything but the index.
The script itself then runs in the layer's image like any other run, without a network.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rgrid_core import requirements as requirement_lines
from rgrid_core.runtimes import Runtime

from .sandbox import SandboxError

log = logging.getLogger("rgrid.layers")

BUILD_TIMEOUT = 900.0  # seconds both steps of a build may take together
PIP_TAIL_LINES = 8  # the last lines of pip's output a failure shows
# Settings of the worker's own pip that the build's pip follows (the index, its trust, a proxy).
# Not HTTP(S)_PROXY: a worker's Ray processes point those at a closed loopback port on purpose
# (rgrid_service.raynet), so a proxy for the build is PIP_PROXY.
PIP_SETTINGS = {"PIP_INDEX_URL": "index-url", "PIP_EXTRA_INDEX_URL": "extra-index-url",
                "PIP_TRUSTED_HOST": "trusted-host", "PIP_DEFAULT_TIMEOUT": "timeout", "PIP_PROXY": "proxy"}
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_UID = 65534  # nobody: who downloads the wheels on a root worker
SETTINGS = "/rgrid-req"  # in the build's containers: requirements.txt, the pip.conf files, the CA copy
WHEELS = "/rgrid-wheels"  # in the build's containers: the downloaded wheels
POLL_SECONDS = 0.5  # how often a build step's container is looked at (a cancel kills it this soon)


class RequirementsError(SandboxError):
    """The layer could not be built: the run fails with this sentence."""


class BuildStopped(Exception):
    """The run was canceled or handed back while its layer was built: the build was killed."""


@dataclass(frozen=True)
class Layer:
    image: str
    how: str  # "present" (this worker had it), "pulled" (another worker built it), "built"
    seconds: float
    pushed: bool = False  # built and shared through the registry

    def note(self) -> str:
        """What the run's log says about it."""
        tag = self.image.rsplit(":", 1)[1]
        if self.how == "present":
            return f"[rgrid] requirements.txt: its layer ({tag}) is already on this worker.\n"
        if self.how == "pulled":
            return f"[rgrid] requirements.txt: its layer ({tag}) was pulled from the registry in {self.seconds:.1f} s.\n"
        shared = "shared through the registry" if self.pushed else "kept on this worker (the registry refused it)"
        return f"[rgrid] requirements.txt: installed into a new layer ({tag}) in {self.seconds:.1f} s, {shared}.\n"


def layer_name(runtime: Runtime, registry: str, requirements: str, scope: str | None = None) -> tuple[str, str]:
    """(repository, tag) of the layer for this runtime, tenant scope and (normalised) requirements."""
    digest = hashlib.sha256(requirements.encode()).hexdigest()
    owner = f"{scope}-" if scope else ""
    return f"{registry}/rgrid/req-{owner}{runtime.name.replace(':', '-')}", f"{runtime.tag}-{digest[:32]}"


def ensure_layer(client, runtime: Runtime, base_image: str, requirements: str, registry: str,
                 lock_dir: Path, limits=None, scope: str | None = None, stop: threading.Event | None = None) -> Layer:
    """The layer's image on this worker: present, pulled or built (and pushed). `stop` set (the run
    canceled or handed back) kills a build under way and raises BuildStopped."""
    import docker

    problem = requirement_lines.problem(requirements)
    if problem:
        raise RequirementsError(problem)
    requirements = requirement_lines.normalised(requirements)
    if not requirements:
        raise RequirementsError("The requirements file lists no packages; add the packages the script imports, "
                                "or run it without --requirements.")
    repository, tag = layer_name(runtime, registry, requirements, scope)
    image = f"{repository}:{tag}"
    started = time.monotonic()
    if _have(client, image):
        return Layer(image, "present", 0.0)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{repository.rsplit('/', 1)[1]}-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run of this worker builds it: wait for that one
        if _have(client, image):
            return Layer(image, "present", time.monotonic() - started)
        try:
            client.images.pull(repository, tag=tag)
            return Layer(image, "pulled", time.monotonic() - started)
        except docker.errors.APIError:  # not in the registry yet (or the registry away): build it here
            pass
        _build(client, runtime, base_image, requirements, repository, tag, lock_dir, limits, stop, Path(lock.name))
        pushed = _push(client, repository, tag)
        return Layer(image, "built", time.monotonic() - started, pushed)


def _have(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


PIP_COMMON = ["[global]", "disable-pip-version-check = true", "no-cache-dir = true", "no-input = true",
              "only-binary = :all:"]


def pip_config(environ: dict[str, str], cert: str | None) -> str:
    """The download step's pip.conf: the worker's own index, trust and proxy settings, wheels only."""
    lines = list(PIP_COMMON)
    for variable, key in PIP_SETTINGS.items():
        if environ.get(variable):
            lines.append(f"{key} = {environ[variable]}")
    if cert:
        lines.append(f"cert = {cert}")
    return "\n".join(lines) + "\n"


def install_config() -> str:
    """The install step's pip.conf: the downloaded wheels only, no index."""
    lines = PIP_COMMON + ["no-index = true", f"find-links = {WHEELS}", "root-user-action = ignore",
                          "break-system-packages = true"]
    return "\n".join(lines) + "\n"


def _ca_bundle(environ: dict[str, str]) -> Path | None:
    """The certificates the worker's own pip trusts (an intercepting proxy's among them)."""
    for candidate in (environ.get("PIP_CERT"), environ.get("REQUESTS_CA_BUNDLE"), str(SYSTEM_CAS)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _pip_package() -> Path:
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        raise RequirementsError("This worker has no pip to install a requirements file with; install pip in its "
                                "Python environment.")
    return Path(list(spec.submodule_search_locations)[0])


def _download_user() -> tuple[int, int]:
    """Who the download step runs as: nobody on a root worker, else the worker's own uid."""
    return (BUILD_UID, BUILD_UID) if os.getuid() == 0 else (os.getuid(), os.getgid())


def _build(client, runtime: Runtime, base_image: str, requirements: str, repository: str, tag: str,
           lock_dir: Path, limits, stop: threading.Event | None = None, lock: Path | None = None) -> None:
    bundle = _ca_bundle(dict(os.environ))
    deadline = time.monotonic() + BUILD_TIMEOUT
    with tempfile.TemporaryDirectory(prefix="build-", dir=lock_dir) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        settings, wheels = folder / "settings", folder / "wheels"
        settings.mkdir(mode=0o755)
        wheels.mkdir(mode=0o755)
        uid, gid = _download_user()
        if os.getuid() == 0:
            os.chown(wheels, uid, gid)
        (settings / "requirements.txt").write_text(requirements)
        cert = None
        if bundle:  # a copy of the file: its own folder may hold the worker's secrets
            shutil.copyfile(bundle, settings / "ca.pem")
            cert = f"{SETTINGS}/ca.pem"
        (settings / "pip.conf").write_text(pip_config(dict(os.environ), cert))
        (settings / "install.conf").write_text(install_config())
        for file in settings.iterdir():
            file.chmod(0o644)
        pip = {str(_pip_package()): {"bind": "/rgrid-pip/pip", "mode": "ro"},
               str(settings): {"bind": SETTINGS, "mode": "ro"}}
        python = runtime.command[0]
        # The settings go on the command line through env(1), not into the container's environment,
        # which a commit would keep in the image.
        download = ["env", "PYTHONPATH=/rgrid-pip", f"PIP_CONFIG_FILE={SETTINGS}/pip.conf", "HOME=/tmp",
                    python, "-m", "pip", "download", "--only-binary=:all:", "--dest", WHEELS,
                    "--requirement", f"{SETTINGS}/requirements.txt"]
        _step(client, runtime, base_image, download, limits, stop, "download", deadline, lock=lock,
              user=f"{uid}:{gid}", network_mode="host",
              volumes={**pip, str(wheels): {"bind": WHEELS, "mode": "rw"}})
        install = ["env", "PYTHONPATH=/rgrid-pip", f"PIP_CONFIG_FILE={SETTINGS}/install.conf",
                   python, "-m", "pip", "install", "--no-index", f"--find-links={WHEELS}", "--only-binary=:all:",
                   "--requirement", f"{SETTINGS}/requirements.txt"]
        _step(client, runtime, base_image, install, limits, stop, "install", deadline, lock=lock,
              user="0:0", network_mode="none", volumes={**pip, str(wheels): {"bind": WHEELS, "mode": "ro"}},
              commit=dict(repository=repository, tag=tag, changes=[
                  f"CMD {json.dumps(list(runtime.command))}",
                  "USER root",
                  f"LABEL org.rgrid.requirements={tag.rsplit('-', 1)[1]}",
              ]))


def _step(client, runtime: Runtime, base_image: str, command: list[str], limits, stop, step: str,
          deadline: float | None = None, commit: dict | None = None, lock: Path | None = None, **options) -> None:
    """One step of the build in its own container, removed afterwards (committed first, if asked).
    `lock`: the build's lock file, held while it runs, as a label: a container whose builder died
    is removed by the worker's sweep (container.remove_leftovers)."""
    import docker

    from .container import LABEL_LOCK

    extra = {}
    if limits is not None:
        mem = limits.memory_mb * 1024 * 1024
        extra = dict(mem_limit=mem, memswap_limit=mem, pids_limit=limits.max_processes)
    try:
        container = client.containers.create(
            base_image, command, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            labels={"org.rgrid.build": "requirements", **({LABEL_LOCK: str(lock)} if lock else {})},
            **extra, **options)
    except docker.errors.APIError as e:
        raise RequirementsError(f"The layer for requirements.txt could not be built on {runtime.name} "
                                f"({e.explanation or e}); try the run again.") from e
    try:
        container.start()
        state = _wait(container, runtime, stop, deadline)
        if state.get("OOMKilled"):
            raise RequirementsError(
                f"Installing requirements.txt on {runtime.name} ran out of memory "
                f"({limits.memory_mb if limits else '?'} MB) during pip's {step}; list fewer packages, or ask "
                "the operator for more memory per run.")
        if state.get("ExitCode") != 0:
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            raise RequirementsError(failure_sentence(runtime.name, output))
        if commit:
            container.commit(**commit)
    except docker.errors.APIError as e:
        raise RequirementsError(f"The layer for requirements.txt could not be built on {runtime.name} "
                                f"({e.explanation or e}); try the run again.") from e
    finally:
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone, or the engine away: nothing more to do here
            pass


def _wait(container, runtime: Runtime, stop: threading.Event | None, deadline: float | None = None) -> dict:
    """The container's final State, polling so that a stop or the build's time limit kills it at once."""
    deadline = deadline if deadline is not None else time.monotonic() + BUILD_TIMEOUT
    while True:
        try:
            container.reload()
        except Exception as e:  # noqa: BLE001 - the engine went away while it ran
            raise RequirementsError(f"The worker lost its Docker engine while installing requirements.txt on "
                                    f"{runtime.name} ({type(e).__name__}); run it again.") from e
        if container.status in ("exited", "dead"):
            return container.attrs.get("State", {})
        if stop is not None and stop.is_set():
            _kill(container)
            raise BuildStopped()
        if time.monotonic() > deadline:
            _kill(container)
            raise RequirementsError(f"Installing requirements.txt on {runtime.name} did not finish within "
                                    f"{BUILD_TIMEOUT / 60:.0f} minutes; list fewer or smaller packages.")
        if stop is not None:
            stop.wait(POLL_SECONDS)
        else:
            time.sleep(POLL_SECONDS)


def _kill(container) -> None:
    try:
        container.kill()
    except Exception:  # noqa: BLE001 - it exited meanwhile; remove(force=True) follows anyway
        pass


def failure_sentence(runtime: str, pip_output: str) -> str:
    """What the person reads when pip failed: the sentence, then pip's last lines."""
    lines = [line for line in pip_output.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-PIP_TAIL_LINES:]) or "(pip printed nothing)"
    return (f"The packages in requirements.txt could not be installed on {runtime}: check their names and "
            f"versions (only packages published as wheels can be installed). pip said:\n{tail}")


def _push(client, repository: str, tag: str) -> bool:
    """Share the layer through the registry; a refusal only costs other workers a build of their own."""
    try:
        for line in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                log.warning("the requirements layer %s:%s was not pushed: %s", repository, tag, line["error"])
                return False
    except Exception as e:  # noqa: BLE001 - the registry away: the layer stays on this worker
        log.warning("the requirements layer %s:%s was not pushed: %s", repository, tag, e)
        return False
    return True

"""A run's requirements.txt as a layer on its runtime's image, built once for the whole fleet.

The layer's image is named by the runtime's tag and the file's sha256
(`<registry>/rgrid/req-<runtime>:<runtime tag>-<file hash>`), so every worker agrees on it without
asking anyone. A worker uses its own copy when it has one, else pulls it from the registry (another
worker built it), else builds it and pushes it there. Builds of one layer on one worker take a file
lock, so concurrent runs asking for it build it once.

The build runs pip in a container of the runtime's image on the host's network (PyPI, or the index
the worker's own pip settings name). The images carry no pip: the worker's own pip (pure Python) is
mounted read-only, and its index, certificates and proxy go in through a pip.conf in a mounted
folder, so none of them stays in the image. Only wheels are installed (PIP_ONLY_BINARY): no
package's own build code runs while the build has the network. The script itself then runs in the
layer's image like any other run, without a network.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rgrid_core.runtimes import Runtime

from .sandbox import SandboxError

log = logging.getLogger("rgrid.layers")

BUILD_TIMEOUT = 900.0  # seconds pip may take
PIP_TAIL_LINES = 8  # the last lines of pip's output a failure shows
# Settings of the worker's own pip that the build's pip follows (the index, its trust, a proxy).
# Not HTTP(S)_PROXY: a worker's Ray processes point those at a closed loopback port on purpose
# (rgrid_service.raynet), so a proxy for the build is PIP_PROXY.
PIP_SETTINGS = {"PIP_INDEX_URL": "index-url", "PIP_EXTRA_INDEX_URL": "extra-index-url",
                "PIP_TRUSTED_HOST": "trusted-host", "PIP_DEFAULT_TIMEOUT": "timeout", "PIP_PROXY": "proxy"}
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")


class RequirementsError(SandboxError):
    """The layer could not be built: the run fails with this sentence."""


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


def layer_name(runtime: Runtime, registry: str, requirements: str) -> tuple[str, str]:
    """(repository, tag) of the layer for this runtime and requirements file."""
    digest = hashlib.sha256(requirements.encode()).hexdigest()
    return f"{registry}/rgrid/req-{runtime.name.replace(':', '-')}", f"{runtime.tag}-{digest[:32]}"


def ensure_layer(client, runtime: Runtime, base_image: str, requirements: str, registry: str,
                 lock_dir: Path, limits=None) -> Layer:
    """The layer's image on this worker: present, pulled or built (and pushed)."""
    import docker

    repository, tag = layer_name(runtime, registry, requirements)
    image = f"{repository}:{tag}"
    started = time.monotonic()
    if _have(client, image):
        return Layer(image, "present", 0.0)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run of this worker builds it: wait for that one
        if _have(client, image):
            return Layer(image, "present", time.monotonic() - started)
        try:
            client.images.pull(repository, tag=tag)
            return Layer(image, "pulled", time.monotonic() - started)
        except docker.errors.APIError:  # not in the registry yet (or the registry away): build it here
            pass
        _build(client, runtime, base_image, requirements, repository, tag, lock_dir, limits)
        pushed = _push(client, repository, tag)
        return Layer(image, "built", time.monotonic() - started, pushed)


def _have(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def pip_config(environ: dict[str, str], cert: str | None) -> str:
    """The build's pip.conf: the worker's own index, trust and proxy settings, wheels only."""
    lines = ["[global]", "disable-pip-version-check = true", "no-cache-dir = true", "no-input = true",
             "root-user-action = ignore", "break-system-packages = true", "only-binary = :all:"]
    for variable, key in PIP_SETTINGS.items():
        if environ.get(variable):
            lines.append(f"{key} = {environ[variable]}")
    if cert:
        lines.append(f"cert = {cert}")
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


def _build(client, runtime: Runtime, base_image: str, requirements: str, repository: str, tag: str,
           lock_dir: Path, limits) -> None:
    import docker

    bundle = _ca_bundle(dict(os.environ))
    with tempfile.TemporaryDirectory(prefix="build-", dir=lock_dir) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        (folder / "requirements.txt").write_text(requirements)
        cert = f"/rgrid-ca/{bundle.name}" if bundle else None
        (folder / "pip.conf").write_text(pip_config(dict(os.environ), cert))
        volumes = {str(_pip_package()): {"bind": "/rgrid-pip/pip", "mode": "ro"},
                   str(folder): {"bind": "/rgrid-req", "mode": "ro"}}
        if bundle:  # its folder: a single file bound over the image's tree was refused by the engine
            volumes[str(bundle.parent)] = {"bind": "/rgrid-ca", "mode": "ro"}
        extra = {}
        if limits is not None:
            mem = limits.memory_mb * 1024 * 1024
            extra = dict(mem_limit=mem, memswap_limit=mem, pids_limit=limits.max_processes)
        # The settings go on the command line through env(1), not into the container's environment,
        # which a commit would keep in the image.
        command = ["env", "PYTHONPATH=/rgrid-pip", "PIP_CONFIG_FILE=/rgrid-req/pip.conf",
                   runtime.command[0], "-m", "pip", "install", "--requirement", "/rgrid-req/requirements.txt"]
        container = client.containers.create(
            base_image, command, user="0:0", network_mode="host", volumes=volumes,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], labels={"org.rgrid.build": "requirements"}, **extra)
        try:
            container.start()
            try:
                code = container.wait(timeout=BUILD_TIMEOUT)["StatusCode"]
            except Exception:  # noqa: BLE001 - the wait timed out (or the engine lost it)
                container.kill()
                raise RequirementsError(f"Installing requirements.txt on {runtime.name} did not finish within "
                                        f"{BUILD_TIMEOUT / 60:.0f} minutes; list fewer or smaller packages.")
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            if code != 0:
                raise RequirementsError(failure_sentence(runtime.name, output))
            container.commit(repository=repository, tag=tag, changes=[
                f"CMD {json.dumps(list(runtime.command))}",
                "USER root",
                f"LABEL org.rgrid.requirements={tag.rsplit('-', 1)[1]}",
            ])
        except docker.errors.APIError as e:
            raise RequirementsError(f"The layer for requirements.txt could not be built on {runtime.name} "
                                    f"({e.explanation or e}).") from e
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
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

"""A private Docker engine and image registry, started and stopped by whoever needs them (the image
builder, the tests, a local grid), on a socket and a loopback port of their own.

This kind of machine has no Docker engine running: Debian's docker.io is started here with no
iptables, no bridge (containers get `--network none` anyway) and a data root of its own, so it
never meets another engine. Debian's docker-registry serves the catalogue images on 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


class DockerUnavailable(Exception):
    pass


def missing_tools() -> list[str]:
    """The Debian packages this needs that the machine lacks."""
    wanted = {"dockerd": "docker.io", "docker-registry": "docker-registry", "mmdebstrap": "mmdebstrap"}
    return sorted({pkg for tool, pkg in wanted.items() if not shutil.which(tool)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class DockerEngine:
    """dockerd on unix://<base>/docker.sock with its data under <base>; overlay2, or vfs where the
    kernel offers no overlay (slower: every container copies its whole image)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.socket = self.base / "docker.sock"
        self.proc: subprocess.Popen | None = None
        self.storage_driver = ""

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> "DockerEngine":
        if not shutil.which("dockerd"):
            raise DockerUnavailable("dockerd is not installed; install Debian's 'docker.io' package.")
        self.base.mkdir(parents=True, exist_ok=True)
        errors = []
        for driver in ("overlay2", "vfs"):
            log = self.base / f"dockerd-{driver}.log"
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                     f"--storage-driver={driver}", "--host", self.host,
                     "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                     "--pidfile", str(self.base / "docker.pid")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready():
                self.storage_driver = driver
                return self
            _stop(self.proc)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            errors.append(f"{driver}: {tail[0][:300]}")
        raise DockerUnavailable("The Docker engine did not start: " + "; ".join(errors))

    def _wait_ready(self) -> bool:
        """Our dockerd answers on the socket: /info names our data root (another engine left
        listening on the same socket path does not count)."""
        deadline = time.monotonic() + START_TIMEOUT
        transport = httpx.HTTPTransport(uds=str(self.socket))
        data_root = str(self.base / "data")
        with httpx.Client(transport=transport, base_url="http://docker", timeout=2) as http:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    answer = http.get("/info")
                    root = answer.json().get("DockerRootDir") if answer.status_code == 200 else None
                    if root and os.path.realpath(root) == os.path.realpath(data_root):
                        return True
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)
        return False

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host, version="auto", timeout=600)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)  # dockerd stops its containers and its containerd with it
            self.proc = None

    def __enter__(self) -> "DockerEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


class Registry:
    """Debian's docker-registry (the CNCF distribution) on 127.0.0.1:<free port>, storing under
    `storage`, which may outlive it (the image cache)."""

    def __init__(self, storage: Path, base: Path):
        self.storage = Path(storage)
        self.base = Path(base)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        if not shutil.which("docker-registry"):
            raise DockerUnavailable("docker-registry is not installed; install Debian's 'docker-registry' package.")
        self.storage.mkdir(parents=True, exist_ok=True)
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        config = self.base / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n")
        with open(self.base / "registry.log", "wb") as out:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise DockerUnavailable(f"The image registry did not start; see {self.base / 'registry.log'}.")

    def has(self, repository: str, tag: str) -> bool:
        return self.digest(repository, tag) is not None

    def digest(self, repository: str, tag: str) -> str | None:
        """The manifest digest the tag names now (Docker-Content-Digest), None when there is none."""
        answer = httpx.head(f"http://{self.address}/v2/{repository}/manifests/{tag}", timeout=10,
                            headers={"Accept": MANIFEST_V2})
        if answer.status_code != 200:
            return None
        return answer.headers.get("Docker-Content-Digest")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=5)
            self.proc = None

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def cache_dir() -> Path:
    """Where built images are kept between runs (outside the repository, like the Pulumi engine)."""
    return Path(os.environ.get("RGRID_CACHE_DIR", Path.home() / ".cache" / "rgrid"))

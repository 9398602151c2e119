"""Moving files between the laptop and the object store through presigned URLs.

Everything streams in 1 MiB chunks, so memory stays flat whatever the file size; every file is
checksummed (sha256 end to end, md5 for the store's ETag check on submit).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from rgrid_core.names import output_path_problem

CHUNK = 1024 * 1024


class TransferError(Exception):
    pass


@dataclass
class LocalInput:
    name: str  # name inside /work
    source: Path  # what the user named
    upload_path: Path  # the file actually sent (a tar for folders)
    kind: str
    size: int = 0
    sha256: str = ""
    md5: str = ""

    def spec(self) -> dict:
        return dict(name=self.name, kind=self.kind, size=self.size, sha256=self.sha256, md5=self.md5)


def checksum(path: Path) -> tuple[int, str, str]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


def prepare(name: str, source: Path, tmpdir: Path) -> LocalInput:
    """Checksum a file, or pack a folder into a tar first. Raises TransferError with a sentence."""
    try:
        if source.is_dir():
            archive = tmpdir / f"{name}.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(os.path.realpath(source), arcname=".")  # a symlinked folder sends its contents
            item = LocalInput(name, source, archive, "dir")
        else:
            item = LocalInput(name, source, source, "file")
        item.size, item.sha256, item.md5 = checksum(item.upload_path)
        return item
    except OSError as e:
        raise TransferError(f"Cannot read {source}: {e.strerror or e}. Nothing was queued.") from e


_transient = retry(
    retry=retry_if_exception_type((httpx.TransportError, TransferError)),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.5, max=5),
    reraise=True,
)


@_transient
def upload(url: str, item: LocalInput, progress=None) -> None:
    def body():
        with open(item.upload_path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                if progress:
                    progress(len(chunk))
                yield chunk

    try:
        resp = httpx.put(url, content=body(), headers={"Content-Length": str(item.size)}, timeout=300)
    except httpx.TransportError:
        raise
    if resp.status_code >= 500:
        raise TransferError(f"the object store answered {resp.status_code}")
    if resp.status_code >= 400:
        raise TransferError(f"the object store refused the upload of {item.source} ({resp.status_code}).")


def send(upload_to: dict, item: LocalInput, progress=None) -> None:
    """Upload an input where create said: one presigned PUT (`url`), or, for a file over the
    multipart threshold, each part to its presigned UploadPart URL (`part_urls`, `part_bytes`
    each but the last). Submit then completes the multipart upload on the server."""
    if not upload_to.get("part_urls"):
        upload(upload_to["url"], item, progress)
        return
    part = upload_to["part_bytes"]
    for n, url in enumerate(upload_to["part_urls"]):
        upload_part(url, item, n * part, min(part, item.size - n * part), progress)


@_transient
def upload_part(url: str, item: LocalInput, offset: int, length: int, progress=None) -> None:
    """PUT `length` bytes of the file from `offset`, streamed in chunks (a retry sends the part again)."""
    sent = [0]

    def body():
        with open(item.upload_path, "rb") as f:
            f.seek(offset)
            left = length
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise TransferError(f"{item.source} got shorter while it was being uploaded")
                left -= len(chunk)
                sent[0] += len(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk

    try:
        resp = httpx.put(url, content=body(), headers={"Content-Length": str(length)}, timeout=300)
    except httpx.TransportError:
        if progress:
            progress(-sent[0])
        raise
    if resp.status_code >= 500:
        if progress:
            progress(-sent[0])
        raise TransferError(f"the object store answered {resp.status_code}")
    if resp.status_code >= 400:
        raise TransferError(f"the object store refused a part of {item.source} ({resp.status_code}).")


def safe_target(root: Path, rel: str) -> Path:
    """Where output `rel` goes under root; refuses any name that would land outside it."""
    problem = output_path_problem(rel)
    root = root.resolve()
    target = None if problem else (root / rel).resolve()  # resolving a NUL would raise ValueError
    if problem or not target.is_relative_to(root) or target == root:
        raise TransferError(f"Refusing output name {rel!r}: it {problem or 'escapes the output folder'}.")
    return target


def current_umask() -> int:
    """This process's umask, read without changing it (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@_transient
def download(url: str, target: Path, sha256: str, progress=None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".rgrid-")
    try:
        with os.fdopen(fd, "wb") as f, httpx.stream("GET", url, timeout=300) as resp:
            if resp.status_code >= 400:
                raise TransferError(f"the object store answered {resp.status_code} for {target.name}")
            for chunk in resp.iter_bytes(CHUNK):
                f.write(chunk)
                digest.update(chunk)
                if progress:
                    progress(len(chunk))
        if digest.hexdigest() != sha256:
            raise TransferError(f"{target.name} arrived with a different checksum")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it 0600; a new file gets the user's umask
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

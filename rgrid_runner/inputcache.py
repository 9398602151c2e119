"""Inputs kept on the worker by content, so the same file is fetched from the object store once.

A batch runs one script over many inputs, and a user re-runs the same script with the same data:
without this every run downloads the same bytes again. Entries are named by their sha256 and only
ever written after a verified download; every use re-checks the sha256 while copying, so a damaged
entry is dropped and fetched again rather than handed to a script. The cache lives beside the run
folders, never inside one, so no sandbox can see or change it. Oldest-used entries are evicted
when the cache grows past its size.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1024 * 1024


class InputCache:
    # One lock per sha256 being fetched, for the whole process: a node's runs are threads of one
    # runner process, and the first two runs of a batch usually want the same script at once.
    _fetching: dict[str, threading.Lock] = {}
    _fetching_guard = threading.Lock()

    def __init__(self, root: Path, limit_bytes: int):
        self.root = root
        self.limit = limit_bytes

    @contextmanager
    def fetching(self, sha256: str):
        """Held while one run of this process fetches sha256 into the cache: another run wanting
        the same file waits, then finds it cached instead of downloading it again."""
        with self._fetching_guard:
            lock = self._fetching.setdefault(sha256, threading.Lock())
        with lock:
            yield

    @classmethod
    def for_settings(cls, settings) -> "InputCache | None":
        if settings.input_cache_mb <= 0:
            return None
        return cls(Path(settings.work_root) / ".input-cache", settings.input_cache_mb * 1024 * 1024)

    def _entry(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def worth_caching(self, size: int) -> bool:
        """Files bigger than a quarter of the cache would only push everything else out."""
        return size * 4 <= self.limit

    def copy_out(self, sha256: str, dest: Path) -> bool:
        """Copy the cached file with this sha256 to dest, checking it. False: not (validly) cached."""
        entry = self._entry(sha256)
        digest = hashlib.sha256()
        try:
            with open(entry, "rb") as src, open(dest, "wb") as out:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            dest.unlink(missing_ok=True)
            return False
        if digest.hexdigest() != sha256:
            entry.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
            return False
        os.utime(entry)  # most recently used: evicted last
        return True

    def path_if_valid(self, sha256: str) -> Path | None:
        """The cached file itself (for reading only), after checking its sha256."""
        entry = self._entry(sha256)
        digest = hashlib.sha256()
        try:
            with open(entry, "rb") as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        if digest.hexdigest() != sha256:
            entry.unlink(missing_ok=True)
            return None
        os.utime(entry)
        return entry

    def new_entry_path(self, sha256: str) -> Path:
        """A file of its own to download into, that will become the entry for sha256 (see add()):
        never shared with another download, whichever process or thread makes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._entry(sha256)
        fd, path = tempfile.mkstemp(dir=self.root, prefix=f".{sha256}.", suffix=".part")
        os.close(fd)
        return Path(path)

    def add(self, sha256: str, verified_file: Path) -> Path:
        """Publish a downloaded, sha256-checked file as the entry (atomically), then evict."""
        entry = self._entry(sha256)
        os.replace(verified_file, entry)
        self.evict()
        return entry

    def evict(self) -> None:
        entries = []
        for e in os.scandir(self.root):
            if e.name.startswith("."):
                self._drop_if_abandoned(e)
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, e.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit:
                break
            Path(path).unlink(missing_ok=True)
            total -= size

    @staticmethod
    def _drop_if_abandoned(e: os.DirEntry) -> None:
        """A partial download older than an hour belonged to a runner that died mid-transfer."""
        try:
            if time.time() - e.stat().st_mtime > 3600:
                os.unlink(e.path)
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

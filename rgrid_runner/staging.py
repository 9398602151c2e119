"""Files in and out of /work: verified downloads of inputs, detection and upload of outputs."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

from rgrid_core.names import input_name_problem, output_path_problem
from rgrid_service.storage import ObjectStore, output_key

from .inputcache import InputCache

Snapshot = dict[str, tuple[int, int]]


class StagingError(Exception):
    pass


def stage_inputs(store: ObjectStore, execution_id: str, inputs: list[dict], workdir: Path,
                 cache: InputCache | None = None) -> int:
    """Put every input into workdir, checking its sha256; folders arrive as tar and are unpacked.

    Inputs come from the worker's cache when it holds them, else from the store (and then join
    the cache). Returns how many bytes were fetched from the store."""
    fetched = 0
    for spec in inputs:
        name = spec["name"]
        if input_name_problem(name):
            raise StagingError(f"refusing input name {name!r}")
        key = spec["object_key"]
        sha256, size = spec["sha256"], int(spec.get("size") or 0)
        if spec.get("kind") == "dir":
            archive = cache.path_if_valid(sha256) if cache else None
            if archive is None:
                archive, fetched = _fetch(store, key, sha256, size, cache, workdir.parent / f"{name}.tar"), fetched + size
            target = workdir / name
            target.mkdir()
            try:
                tar = tarfile.open(archive)  # once open, an eviction cannot take it away
            except FileNotFoundError:  # evicted at once by a concurrent run: fetch it again
                archive = workdir.parent / f"{name}.tar"
                store.download_verified(key, archive, sha256)
                fetched += size
                tar = tarfile.open(archive)
            with tar:
                tar.extractall(target, filter="data")  # refuses links and paths that escape
            if archive.parent == workdir.parent:
                archive.unlink()
        else:
            dest = workdir / name
            if cache and cache.copy_out(sha256, dest):
                continue
            source = _fetch(store, key, sha256, size, cache, dest)
            fetched += size
            if source != dest:
                try:
                    shutil.copyfile(source, dest)  # fetched and checked just now
                except FileNotFoundError:  # evicted at once by a concurrent run: fetch it again
                    store.download_verified(key, dest, sha256)
    return fetched


def _fetch(store: ObjectStore, key: str, sha256: str, size: int, cache: InputCache | None, dest: Path) -> Path:
    """Download key, checking its sha256, into the cache when it is worth keeping, else to dest.
    Returns where the verified file now is."""
    if cache is None or not cache.worth_caching(size):
        store.download_verified(key, dest, sha256)
        return dest
    part = cache.new_entry_path(sha256)
    try:
        store.download_verified(key, part, sha256)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return cache.add(sha256, part)


def snapshot(workdir: Path) -> Snapshot:
    """(size, mtime) of every regular file, to tell later what the script created or changed."""
    result: Snapshot = {}
    for rel, st in _regular_files(workdir):
        result[rel] = (st.st_size, st.st_mtime_ns)
    return result


def changed_files(workdir: Path, before: Snapshot) -> list[str]:
    return sorted(
        rel for rel, st in _regular_files(workdir) if before.get(rel) != (st.st_size, st.st_mtime_ns)
    )


def _regular_files(root: Path):
    """Regular files only, never following symlinks (a script could point one at anything)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                yield os.path.relpath(full, root), st


def upload_outputs(store: ObjectStore, execution_id: str, attempt: int, workdir: Path, paths: list[str]) -> list[dict]:
    """Upload each changed file; returns the rows to commit with the final status."""
    rows = []
    for rel in paths:
        if output_path_problem(rel):
            continue  # a name we could not safely hand back; never uploaded
        full = workdir / rel
        digest = hashlib.sha256()
        with open(full, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
            for chunk in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(chunk)
        key = output_key(execution_id, attempt, rel)
        store.upload_file(key, full)
        rows.append(dict(path=rel, size=full.stat().st_size, sha256=digest.hexdigest(), object_key=key))
    return rows

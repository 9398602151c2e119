"""Files in and out of /work: verified downloads of inputs, detection and upload of outputs.

Both go through presigned URLs the control plane hands out per run (rgrid_runner.workerclient):
the worker never holds store keys.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Callable

from rgrid_core.names import input_name_problem, output_path_problem
from rgrid_core.workerwire import CommittedOutput, InputSpec

from .inputcache import InputCache

Snapshot = dict[str, tuple[int, int]]
# Downloads one input to a path, checking its sha256 (workerclient.ChecksumMismatch when it differs).
Fetch = Callable[[InputSpec, Path], None]


class StagingError(Exception):
    pass


def stage_inputs(fetch: Fetch, inputs: list[InputSpec], workdir: Path, cache: InputCache | None = None) -> int:
    """Put every input into workdir, checking its sha256; folders arrive as tar and are unpacked.

    Inputs come from the worker's cache when it holds them, else through fetch (and then join
    the cache). Returns how many bytes were fetched from the store."""
    fetched = 0
    for spec in inputs:
        name = spec.name
        if input_name_problem(name):
            raise StagingError(f"refusing input name {name!r}")
        sha256, size = spec.sha256, int(spec.size or 0)
        if spec.kind == "dir":
            archive = cache.path_if_valid(sha256) if cache else None
            if archive is None:
                archive, fetched = _fetch(fetch, spec, cache, workdir.parent / f"{name}.tar"), fetched + size
            target = workdir / name
            target.mkdir()
            try:
                tar = tarfile.open(archive)  # once open, an eviction cannot take it away
            except FileNotFoundError:  # evicted at once by a concurrent run: fetch it again
                archive = workdir.parent / f"{name}.tar"
                fetch(spec, archive)
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
            source = _fetch(fetch, spec, cache, dest)
            fetched += size
            if source != dest:
                try:
                    shutil.copyfile(source, dest)  # fetched and checked just now
                except FileNotFoundError:  # evicted at once by a concurrent run: fetch it again
                    fetch(spec, dest)
    return fetched


def _fetch(fetch: Fetch, spec: InputSpec, cache: InputCache | None, dest: Path) -> Path:
    """Download one input, checking its sha256, into the cache when it is worth keeping, else to
    dest. Returns where the verified file now is."""
    if cache is None or not cache.worth_caching(spec.size):
        fetch(spec, dest)
        return dest
    with cache.fetching(spec.sha256):
        cached = cache.path_if_valid(spec.sha256)  # fetched by another run meanwhile
        if cached is not None:
            return cached
        part = cache.new_entry_path(spec.sha256)
        try:
            fetch(spec, part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return cache.add(spec.sha256, part)


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


def upload_outputs(client, execution_id: str, attempt: int, workdir: Path, paths: list[str]) -> list[CommittedOutput]:
    """Upload each changed file through the presigned PUTs the control plane hands out (one
    request for all of them); returns what to commit with the final status."""
    files = []
    for rel in paths:
        if output_path_problem(rel):
            continue  # a name we could not safely hand back; never uploaded
        files.append((rel, (workdir / rel).lstat().st_size))
    if not files:
        return []
    urls = client.output_urls(execution_id, attempt, files)
    rows = []
    for rel, size in files:
        def fresh(rel=rel, size=size) -> str:
            return client.output_urls(execution_id, attempt, [(rel, size)])[rel]

        sent, sha256 = client.upload(urls[rel], workdir / rel, fresh_url=fresh)
        rows.append(CommittedOutput(path=rel, size=sent, sha256=sha256))
    return rows

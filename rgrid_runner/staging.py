"""Files in and out of /work: verified downloads of inputs, detection and upload of outputs."""
from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from pathlib import Path

from rgrid.names import input_name_problem, output_path_problem
from rgrid_service.storage import ObjectStore, input_key, output_key

Snapshot = dict[str, tuple[int, int]]


class StagingError(Exception):
    pass


def stage_inputs(store: ObjectStore, execution_id: str, inputs: list[dict], workdir: Path) -> None:
    """Download every input into workdir, checking its sha256; folders arrive as tar and are unpacked."""
    for spec in inputs:
        name = spec["name"]
        if input_name_problem(name):
            raise StagingError(f"refusing input name {name!r}")
        key = input_key(execution_id, name)
        if spec.get("kind") == "dir":
            archive = workdir.parent / f"{name}.tar"
            store.download_verified(key, archive, spec["sha256"])
            target = workdir / name
            target.mkdir()
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")  # refuses links and paths that escape
            archive.unlink()
        else:
            store.download_verified(key, workdir / name, spec["sha256"])


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

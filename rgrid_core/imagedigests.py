"""The runtime images' digests: what a worker checks the image it runs against.

A tag in the registry can be overwritten by anyone who can push to it (the registry has no
auth; the private network reaches it), so workers pull and run a catalogue image only by the
manifest digest its builder recorded (rgrid_service.images). The builder writes them into a file
beside the registry's storage, never inside what the registry serves; the control plane reads it
(RGRID_IMAGE_DIGESTS_FILE) and hands each worker {runtime: digest} (rgrid_core.workerwire).

The file: {"<runtime>": {"repository": …, "tag": …, "digest": "sha256:<64 hex>"}}. A digest is
published only while its tag is the catalogue's tag of that runtime (the recipe's hash), so a file
left from an older recipe pins no worker to an old image.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .runtimes import CATALOGUE

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
FILE_NAME = "rgrid-image-digests.json"


def digests_file_for(storage: Path) -> Path:
    """Where the builder records the digests of the images in registry storage `storage`: beside it."""
    return Path(storage).resolve().parent / FILE_NAME


def write(path: Path, records: dict[str, dict]) -> None:
    """Merge `records` (runtime -> repository, tag, digest) into the file, atomically, mode 0644."""
    path = Path(path)
    kept = read(path) if path.exists() else {}
    kept.update(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        json.dump(kept, out, indent=2, sort_keys=True)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read(path: Path) -> dict[str, dict]:
    """The file's records; ValueError (a sentence) when it is not one the builder wrote."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"The image digests file {path} is not JSON ({e}); rebuild the runtime images with "
                         "`python -m rgrid_service.images`, which writes it anew.") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"The image digests file {path} is not a map of runtime to its image; rebuild the runtime "
                         "images with `python -m rgrid_service.images`, which writes it anew.")
    return data


# published()'s last answer per file, with the file's identity when it was read: every claim asks,
# and the file changes only when the builder replaces it (a new inode) or someone edits it.
_published_cache: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}


def published(path: str | Path | None) -> dict[str, str]:
    """{runtime: digest} for the catalogue's current images, as the control plane hands them to
    workers. A missing file (or none named) publishes nothing: workers then refuse to run images.
    The file is read again only when it changed (inode, size or modification time)."""
    if not path:
        return {}
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return {}
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _published_cache.get(str(path))
    if cached and cached[0] == identity:
        return dict(cached[1])
    out = _current(read(Path(path)))
    _published_cache[str(path)] = (identity, out)
    return dict(out)


def _current(records: dict[str, dict]) -> dict[str, str]:
    """The records whose tag and repository are the catalogue's current ones, with a sha256 digest."""
    out = {}
    for name, record in records.items():
        runtime = CATALOGUE.get(name)
        digest = record.get("digest")
        if runtime and record.get("tag") == runtime.tag and record.get("repository") == runtime.repository \
                and isinstance(digest, str) and DIGEST.match(digest):
            out[name] = digest
    return out

"""Where a local grid keeps things: all under `<home>/local`, except what must have a short path
or be reachable by the sandbox's unprivileged uid, which lives under the system temp dir."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

# A Unix socket path holds at most 107 bytes. Ray puts its sockets in
# <temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/<name> (about 60 bytes after the temp
# dir), so the temp dir itself must stay under about 40 bytes whatever the home's length.
MAX_RAY_TEMP = 40


def local_dir(home: Path) -> Path:
    return home / "local"


def logs_dir(home: Path) -> Path:
    return local_dir(home) / "logs"


def home_tag(home: Path) -> str:
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]


def short_root() -> Path:
    root = Path(tempfile.gettempdir())
    return root if len(str(root)) <= 16 else Path("/tmp")


def ray_temp_dir(home: Path) -> Path:
    """Ray's sessions (sockets and logs), at a short path; `<home>/local/ray` links to it."""
    path = short_root() / f"rgrid-ray-{home_tag(home)}"
    assert len(str(path)) <= MAX_RAY_TEMP, path
    return path


def ray_token_file(home: Path) -> Path:
    """The grid's Ray token (made once, mode 0600): every Ray process of the grid authenticates with it."""
    return local_dir(home) / "ray-token"


def work_root(home: Path) -> Path:
    """Where runners stage /work. The sandbox runs as an unprivileged uid that must be able to reach
    it, so it lives under the system temp dir rather than inside a possibly private home."""
    return Path(tempfile.gettempdir()) / f"rgrid-work-{home_tag(home)}"


def link_ray_logs(home: Path) -> None:
    """`<home>/local/ray` -> Ray's temp dir, so Ray's logs are where the grid's other logs are."""
    link, target = local_dir(home) / "ray", ray_temp_dir(home)
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(link.readlink()) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():  # an older grid kept Ray's files here: keep them aside
        link.rename(link.with_name("ray-old"))
    link.symlink_to(target)

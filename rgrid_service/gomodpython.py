"""A CPython that Debian does not carry (python:3.10), fetched as a Go module and laid out as a
directory tree for an image.

The Go module proxy is a registry this machine reaches, and `go mod download` checks what it gets
against the checksum database; the recipe pins the module's h1: hash as well, so a module that is
not the pinned one stops the build. kluctl's go-embed-python ships python-build-standalone's
interpreter as a files.json (every file's name, size, permissions, symlink target) next to the
files, the bigger ones stored as NAME.gz. The module cache is kept under ~/.cache/rgrid/gomod.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from rgrid_core.runtimes import GoModulePython

from .dockerhost import cache_dir

MODE_DIR = 1 << 31      # Go's fs.ModeDir
MODE_SYMLINK = 1 << 27  # Go's fs.ModeSymlink


class FetchError(Exception):
    pass


def go_command() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not found:
        raise FetchError("Building python:3.10 needs Go (`go mod download`); install Go 1.21 or newer.")
    return found


def download(source: GoModulePython) -> Path:
    """The module's directory in the module cache, downloaded (and checked) if it is not there yet."""
    env = {**os.environ, "GOMODCACHE": str(cache_dir() / "gomod"), "GOFLAGS": "-mod=mod"}
    done = subprocess.run([go_command(), "mod", "download", "-json", f"{source.module}@{source.version}"],
                          env=env, capture_output=True, text=True, cwd="/")
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or "Dir" not in info:
        said = info.get("Error") or done.stderr.strip() or done.stdout.strip()
        raise FetchError(f"go mod download {source.module}@{source.version} failed: {said}")
    if info.get("Sum") != source.h1:
        raise FetchError(f"{source.module}@{source.version} has hash {info.get('Sum')}, not the pinned "
                         f"{source.h1}; pin the new hash in rgrid_core.runtimes if the change is meant.")
    return Path(info["Dir"])


def lay_out(tree: Path, dest: Path) -> int:
    """The files files.json lists under tree, written to dest with their permissions and symlinks
    (NAME.gz unpacked); each file's size is checked. Returns the number of entries."""
    listing = json.loads((tree / "files.json").read_text())["files"]
    dest.mkdir(parents=True, exist_ok=True)
    for entry in listing:
        name, perm = entry["name"], entry["perm"]
        if name.startswith("/") or ".." in Path(name).parts:
            raise FetchError(f"files.json names a path outside its tree: {name!r}")
        target = dest / name
        if perm & MODE_DIR:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(perm & 0o777)
        elif perm & MODE_SYMLINK:
            link = entry["symlink"]
            if link.startswith("/"):
                raise FetchError(f"files.json links {name!r} to an absolute path: {link!r}")
            target.symlink_to(link)
            root = os.path.realpath(dest)
            if os.path.commonpath([root, os.path.realpath(target)]) != root:  # through earlier links too
                target.unlink()
                raise FetchError(f"files.json links {name!r} outside its tree: {link!r}")
        else:
            opener = (lambda: gzip.open(tree / (name + ".gz"))) if entry.get("compressed") else (lambda: open(tree / name, "rb"))
            with opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            if target.stat().st_size != entry["size"]:
                raise FetchError(f"{name} is {target.stat().st_size} bytes, files.json says {entry['size']}.")
            target.chmod(perm & 0o777)
    return len(listing)


def prepare(source: GoModulePython, workdir: Path) -> Path:
    """The interpreter's tree in a folder named as source.prefix's last part, ready to be copied
    into the image."""
    tree = download(source) / source.subdir
    staged = workdir / "gomodpython" / PurePosixPath(source.prefix).name
    if staged.exists():
        shutil.rmtree(staged)
    lay_out(tree, staged)
    return staged

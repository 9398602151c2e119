"""Builds the runtime catalogue's images from Debian's packages and pushes them to a registry.

No public container registry is reachable, so each image is a Debian root file system made by
mmdebstrap (the essential set plus the runtime's packages, documentation left out), imported into
Docker as one layer. An image is tagged with its recipe's hash (rgrid_core.runtimes), so one that
the registry already holds is not built again: `python -m rgrid_service.images` keeps the registry's
storage under ~/.cache/rgrid/registry, and CI rebuilds only a changed recipe. Timestamps come from
SOURCE_DATE_EPOCH, so the same packages give the same layer; which package versions went in is
written into the image (/etc/rgrid-image-packages), since the mirror moves on.

Each image's manifest digest (the push's, or for an image the registry already held, the one
recorded before, else the registry's answer now) goes into a digests file beside the registry's
storage (rgrid_core.imagedigests): workers pull and run the images only by those digests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rgrid_core import imagedigests
from rgrid_core.runtimes import CATALOGUE, DEBIAN_MIRROR, Runtime

from . import gomodpython
from .dockerhost import DockerEngine, DockerUnavailable, Registry, cache_dir, missing_tools

SOURCE_DATE_EPOCH = "1704067200"  # 2024-01-01: every file's time in every image
PACKAGES_FILE = "/etc/rgrid-image-packages"
LEAVE_OUT = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
             "/usr/share/lintian/*")


class BuildError(Exception):
    pass


@dataclass
class Built:
    runtime: str
    image: str
    cached: bool
    seconds: float
    size_mb: float  # unpacked, as `docker images` shows it; 0 when cached (not pulled)
    digest: str | None = None  # the manifest's, as pushed (None when cached: record_digests reads it)


def mmdebstrap_command(runtime: Runtime, out: Path, python_tree: Path | None = None) -> list[str]:
    """The root file system's build; python_tree (runtime.python laid out, gomodpython) goes to
    its prefix, with links in /usr/local/bin, and its module's version into the packages file."""
    cmd = ["mmdebstrap", "--quiet", "--variant=essential", "--format=tar",
           *(["--include=" + ",".join(runtime.packages)] if runtime.packages else []),
           "--aptopt=Acquire::Check-Valid-Until \"false\"",
           f"--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}} ${{Version}}\\n' > \"$1{PACKAGES_FILE}\""]
    if runtime.python:
        source = runtime.python
        prefix = PurePosixPath(source.prefix)
        if python_tree is None or python_tree.name != prefix.name:
            raise BuildError(f"{runtime.name} needs its interpreter laid out in a folder named {prefix.name}.")
        cmd.append(f"--customize-hook=mkdir -p \"$1{prefix.parent}\"")
        cmd.append(f"--customize-hook=copy-in {python_tree} {prefix.parent}")
        for link in source.links:
            cmd.append(f"--customize-hook=ln -sf {prefix}/bin/{source.links[0]} \"$1/usr/local/bin/{link}\"")
        cmd.append(f"--customize-hook=echo '{source.module} {source.version} {source.h1}' >> \"$1{PACKAGES_FILE}\"")
    for path in LEAVE_OUT:
        cmd.append(f"--dpkgopt=path-exclude={path}")
    cmd.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    return cmd + [runtime.suite, str(out), DEBIAN_MIRROR]


def image_changes(runtime: Runtime) -> list[str]:
    return [
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        "ENV LANG=C.UTF-8",
        "WORKDIR /work",
        # The recipe itself is the tag's hash: a JSON label would lose its quotes to docker
        # import's Dockerfile parsing (seen: {command:[python3],...}).
        f"LABEL org.rgrid.runtime={runtime.name}",
        f"CMD {json.dumps(list(runtime.command))}",
    ]


def build(runtime: Runtime, client, registry: Registry, workdir: Path) -> Built:
    """Build one image and push it, unless the registry already has this recipe's image."""
    image = runtime.image(registry.address)
    if registry.has(runtime.repository, runtime.tag):
        return Built(runtime.name, image, True, 0.0, 0.0)
    started = time.monotonic()
    tarball = workdir / f"{runtime.repository.replace('/', '_')}.tar"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "LANG": "C.UTF-8",
           "TMPDIR": str(workdir)}
    try:
        python_tree = gomodpython.prepare(runtime.python, workdir) if runtime.python else None
    except gomodpython.FetchError as e:
        raise BuildError(f"The interpreter of {runtime.name} could not be fetched: {e}") from e
    done = subprocess.run(mmdebstrap_command(runtime, tarball, python_tree), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BuildError(f"mmdebstrap could not build {runtime.name}:\n{tail}")
    repo = f"{registry.address}/{runtime.repository}"
    client.api.import_image_from_file(str(tarball), repository=repo, tag=runtime.tag, changes=image_changes(runtime))
    tarball.unlink()
    if python_tree:
        shutil.rmtree(python_tree.parent)
    digest = None
    for line in client.images.push(repo, tag=runtime.tag, stream=True, decode=True):
        if "error" in line:
            raise BuildError(f"Pushing {image} failed: {line['error']}")
        digest = (line.get("aux") or {}).get("Digest") or digest
    size = client.images.get(image).attrs["Size"] / 1e6
    return Built(runtime.name, image, False, time.monotonic() - started, size, digest)


def record_digests(registry: Registry, built: list[Built], path: Path) -> dict[str, dict]:
    """Write each image's manifest digest into the digests file at `path`. A pushed image's is the
    push's; a cached one keeps the digest recorded for its tag before (a tag overwritten in the
    registry since then does not change what workers run), else the registry's answer now."""
    before = imagedigests.read(path) if path.exists() else {}
    records = {}
    for b in built:
        runtime = CATALOGUE[b.runtime]
        old = before.get(b.runtime, {})
        digest = b.digest
        if not digest and old.get("tag") == runtime.tag and old.get("repository") == runtime.repository:
            digest = old.get("digest")
        digest = digest or registry.digest(runtime.repository, runtime.tag)
        if not digest or not imagedigests.DIGEST.match(digest):
            raise BuildError(f"The registry gave no manifest digest for {b.image} ({digest!r}); build it again.")
        records[b.runtime] = {"repository": runtime.repository, "tag": runtime.tag, "digest": digest}
    imagedigests.write(path, records)
    return records


def build_all(client, registry: Registry, names: list[str] | None = None, report=print,
              digests_file: Path | None = None) -> list[Built]:
    """Build (or find cached) each named image and record its digest in `digests_file` (default:
    beside the registry's storage)."""
    names = names or list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise BuildError(f"Unknown runtime {unknown[0]!r}. Catalogue: {', '.join(CATALOGUE)}.")
    results = []
    with tempfile.TemporaryDirectory(prefix="rgrid-images-") as tmp:
        for name in names:
            built = build(CATALOGUE[name], client, registry, Path(tmp))
            how = "cached" if built.cached else f"built in {built.seconds:.1f} s, {built.size_mb:.0f} MB"
            report(f"{built.runtime}: {built.image} ({how})")
            results.append(built)
    record_digests(registry, results, digests_file or imagedigests.digests_file_for(registry.storage))
    return results


def registry_storage() -> Path:
    return cache_dir() / "registry"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rgrid_service.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="runtimes to build (default: the whole catalogue)")
    parser.add_argument("--storage", type=Path, default=None, help="registry storage (default: ~/.cache/rgrid/registry)")
    parser.add_argument("--digests-file", type=Path, default=None,
                        help=f"where the images' digests are recorded (default: {imagedigests.FILE_NAME} beside the "
                             "storage); the control plane's RGRID_IMAGE_DIGESTS_FILE")
    args = parser.parse_args(argv)
    lacking = missing_tools()
    if lacking:
        print(f"Building images needs Debian's {', '.join(lacking)}: apt-get install {' '.join(lacking)}", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="rgrid-imagebuild-", dir="/tmp"))
    try:
        with DockerEngine(base / "docker") as engine, Registry(args.storage or registry_storage(), base) as registry:
            build_all(engine.client(), registry, args.names, digests_file=args.digests_file)
    except (BuildError, DockerUnavailable) as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

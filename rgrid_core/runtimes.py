"""Runtimes a script can ask for with --runtime: the catalogue the CLI, the API, the image builder
and the worker share.

Each runtime is a container image built from Debian's packages (rgrid_service.images), named by a
hash of its recipe, so the builder and every worker agree on the exact image without asking each
other. A worker without Docker still runs python:3.11, with its own python3.11 in bubblewrap.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bumped when the way images are built changes (the recipe hash then changes for every image).
RECIPE_VERSION = 1
# Debian's mirror; the images carry exactly what its suites held when they were built.
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class GoModulePython:
    """A CPython that Debian does not carry, laid out into the image from a Go module: the module
    proxy serves it and go checks it against the checksum database, and the pinned h1: hash is
    part of the recipe, so another build of it is another image."""
    module: str     # the Go module holding the interpreter's files
    version: str
    h1: str         # go.sum's hash of the module's files
    subdir: str     # where in the module the tree and its files.json lie
    prefix: str     # where the tree goes in the image
    links: tuple[str, ...] = ("python3",)  # /usr/local/bin names for prefix/bin/<first name>


@dataclass(frozen=True)
class Runtime:
    name: str                   # what --runtime takes
    contents: str               # what a user gets, for `rgrid runtimes`
    suite: str                  # the Debian suite its packages come from
    packages: tuple[str, ...]   # Debian packages installed on top of the essential set
    command: tuple[str, ...]    # the interpreter the script is handed to
    sandbox: bool = False       # also runs in bubblewrap on a worker without Docker
    python: GoModulePython | None = None  # an interpreter laid out over the Debian packages

    def recipe(self) -> dict:
        recipe = {"v": RECIPE_VERSION, "suite": self.suite, "mirror": DEBIAN_MIRROR,
                  "packages": sorted(self.packages), "command": list(self.command)}
        if self.python:  # only then: the other images keep their tags
            recipe["python"] = {**asdict(self.python), "links": list(self.python.links)}
        return recipe

    @property
    def runs_in(self) -> str:
        if self.sandbox:
            return "container; bubblewrap on a worker without Docker"
        return "container (a worker with Docker)"

    @property
    def tag(self) -> str:
        """The image tag: the recipe's hash, so a changed recipe is a new image."""
        blob = json.dumps(self.recipe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def repository(self) -> str:
        """The image's repository in a registry: docker tags cannot hold the name's ':'."""
        return "rgrid/" + self.name.replace(":", "-")

    def image(self, registry: str) -> str:
        return f"{registry}/{self.repository}:{self.tag}"


# CPython 3.10 for python:3.10 (no Debian suite on the mirror has 3.10): python-build-standalone's
# 3.10.16 for linux-amd64, as kluctl's go-embed-python module ships it.
PYTHON_310 = GoModulePython(
    module="github.com/kluctl/go-embed-python", version="v0.0.0-3.10.16-20241219-1",
    h1="h1:bfJRrtWlbdrPtwXXXZzA95yj2Pr9AvSbxDEm8YvbaP0=", subdir="python/internal/data/linux-amd64",
    prefix="/usr/local/python3.10", links=("python3.10", "python3", "python"))

CATALOGUE: dict[str, Runtime] = {r.name: r for r in (
    Runtime("python:3.11", "Python 3.11 (Debian 12)", "bookworm", ("python3",), ("python3",), sandbox=True),
    Runtime("python:3.10", "Python 3.10.16 (python-build-standalone, on Debian 12)", "bookworm", (),
            ("python3",), python=PYTHON_310),
    Runtime("python-datascience",
            "Python 3.11 with numpy, pandas, scipy, matplotlib and scikit-learn (Debian 12)", "bookworm",
            ("python3", "python3-numpy", "python3-pandas", "python3-scipy", "python3-matplotlib",
             "python3-sklearn"), ("python3",)),
    Runtime("ffmpeg", "ffmpeg and Python 3.11 to drive it (Debian 12)", "bookworm",
            ("python3", "ffmpeg"), ("python3",)),
    Runtime("node:20", "Node.js 20 (Debian 13); runs .js scripts", "trixie", ("nodejs",), ("node",)),
)}

SUPPORTED_RUNTIMES = tuple(CATALOGUE)
DEFAULT_RUNTIME = "python:3.11"

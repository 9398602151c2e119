"""Runtimes a script can ask for with --runtime: the catalogue the CLI, the API, the image builder
and the worker share.

Each runtime is a container image built from Debian's packages (rgrid_service.images), named by a
hash of its recipe, so the builder and every worker agree on the exact image without asking each
other. A worker without Docker still runs python:3.11, with its own python3.11 in bubblewrap.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# Bumped when the way images are built changes (the recipe hash then changes for every image).
RECIPE_VERSION = 1
# Debian's mirror; the images carry exactly what its suites held when they were built.
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Runtime:
    name: str                   # what --runtime takes
    contents: str               # what a user gets, for `rgrid runtimes`
    suite: str                  # the Debian suite its packages come from
    packages: tuple[str, ...]   # Debian packages installed on top of the essential set
    command: tuple[str, ...]    # the interpreter the script is handed to
    sandbox: bool = False       # also runs in bubblewrap on a worker without Docker

    def recipe(self) -> dict:
        return {"v": RECIPE_VERSION, "suite": self.suite, "mirror": DEBIAN_MIRROR,
                "packages": sorted(self.packages), "command": list(self.command)}

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


CATALOGUE: dict[str, Runtime] = {r.name: r for r in (
    Runtime("python:3.11", "Python 3.11 (Debian 12)", "bookworm", ("python3",), ("python3",), sandbox=True),
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

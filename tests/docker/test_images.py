"""The runtime catalogue's images (rgrid_service.images): built from Debian's packages into the
registry, pulled into a fresh engine as a worker would, each holding what its runtime promises,
recording its package versions, and run with the guarantees a run will have (no
network, a read-only image). A second build finds every image in the registry and builds nothing."""
from __future__ import annotations

import pytest

from rgrid_core.runtimes import CATALOGUE
from rgrid_runner.container import pinned_reference
from tests.docker.conftest import published_digests

pytestmark = pytest.mark.docker

PROMISES = {
    "python:3.11": ["python3", "-c", "import sys; assert sys.version_info[:2] == (3, 11); print('ok')"],
    "python:3.10": ["python3", "-c", "import sys, ssl, sqlite3, ctypes, zlib; assert sys.version_info[:2] == (3, 10); "
                    "print('ok')"],
    "python-datascience": ["python3", "-c", "import numpy, pandas, scipy.stats, matplotlib, sklearn.linear_model; "
                           "print('ok' if numpy.arange(4).sum() == 6 else 'bad')"],
    "ffmpeg": ["sh", "-c", "ffmpeg -loglevel error -f lavfi -i testsrc=duration=1:size=64x48:rate=10 -c:v mpeg4 "
               "-f null - && echo ok"],
    "node:20": ["node", "-e", "console.log(process.version.startsWith('v20.') ? 'ok' : process.version)"],
}


def _run(client, image: str, command: list[str]) -> str:
    return client.containers.run(image, command, remove=True, network_mode="none", read_only=True,
                                 tmpfs={"/tmp": "rw,size=64m"}, user="200123:200123").decode()


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_each_image_holds_what_its_runtime_promises(docker_grid, name):
    engine, registry = docker_grid
    runtime = CATALOGUE[name]
    client = engine.client()
    image = pinned_reference(runtime, registry.address, published_digests(registry)[name])
    assert registry.has(runtime.repository, runtime.tag)
    assert _run(client, image, PROMISES[name]).strip() == "ok"
    installed = dict(line.split(" ", 1) for line in _run(client, image, ["cat", "/etc/rgrid-image-packages"]).splitlines())
    assert set(runtime.packages) <= set(installed)
    if runtime.python:  # the interpreter laid out from its Go module, with the pinned hash
        assert installed[runtime.python.module] == f"{runtime.python.version} {runtime.python.h1}"


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_an_image_runs_without_network_and_read_only(docker_grid, name):
    engine, registry = docker_grid
    seen = _run(engine.client(), pinned_reference(CATALOGUE[name], registry.address, published_digests(registry)[name]),
                ["sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; "
                             "touch /usr/x 2>/dev/null && echo writable; touch /tmp/x && echo tmp"])
    assert seen.split() == ["lo", "tmp"]


def test_a_second_build_finds_every_image_in_the_registry(docker_grid):
    from rgrid_service.images import build_all

    engine, registry = docker_grid
    said = []
    recorded = published_digests(registry)
    built = build_all(engine.client(), registry, report=said.append)
    assert [b.cached for b in built] == [True] * len(CATALOGUE)
    assert published_digests(registry) == recorded and set(recorded) == set(CATALOGUE)
    assert all(line.endswith("(cached)") for line in said)

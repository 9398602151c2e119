"""A private Docker engine and the catalogue's registry for the whole session (rgrid_service.dockerhost).

The registry stores under ~/.cache/rgrid/registry (RGRID_CACHE_DIR moves it), where the images
stay between sessions: only an image whose recipe changed is built again. The engine's data root is
the session's own, so every session pulls the images from the registry by their recorded digests,
as a worker does at boot.
Docker missing (not root, or docker.io, docker-registry, mmdebstrap not installed) is a skip, and a
failure under RGRID_REQUIRE_ALL=1."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import missing


@pytest.fixture(scope="session")
def docker_grid():
    from rgrid_service import images
    from rgrid_service.dockerhost import DockerEngine, DockerUnavailable, Registry, missing_tools
    from rgrid_runner.container import prepull

    lacking = missing_tools()
    if lacking:
        missing("Docker", f"install Debian's {', '.join(lacking)} (scripts/setup.sh --with-tests does)")
    if os.geteuid() != 0:
        missing("Docker", "the tests start their own dockerd, which needs root")
    base = Path(tempfile.mkdtemp(prefix="rgrid-docker-test-", dir="/tmp"))
    try:
        with DockerEngine(base / "engine") as engine, Registry(images.registry_storage(), base) as registry:
            client = engine.client()
            images.build_all(client, registry)  # and records their digests beside the storage
            pulled, refused = prepull(client, registry.address, published_digests(registry))
            assert not refused, refused
            yield engine, registry
    except DockerUnavailable as e:
        missing("Docker", str(e))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def published_digests(registry) -> dict[str, str]:
    """{runtime: digest} as the control plane publishes them from the builder's file."""
    from rgrid_core import imagedigests

    return imagedigests.published(imagedigests.digests_file_for(registry.storage))

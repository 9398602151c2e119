"""The runtime catalogue (rgrid_core.runtimes) and the image recipe built from it
(rgrid_service.images). The images themselves: tests/docker."""
from __future__ import annotations

import re

from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME, SUPPORTED_RUNTIMES, Runtime
from rgrid_service.images import image_changes, mmdebstrap_command

# A Docker reference: repository path components and a tag (https://docs.docker.com/reference/cli/docker/image/tag/).
REFERENCE = re.compile(r"^127\.0\.0\.1:5000/[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*:[\w][\w.-]{0,127}$")


def test_the_catalogue_has_what_the_issue_names_and_every_image_name_is_a_docker_reference():
    assert {"python:3.11", "python-datascience", "ffmpeg", "node:20"} <= set(CATALOGUE)
    assert set(SUPPORTED_RUNTIMES) <= set(CATALOGUE)
    assert DEFAULT_RUNTIME in CATALOGUE and CATALOGUE[DEFAULT_RUNTIME].sandbox
    for runtime in CATALOGUE.values():
        assert REFERENCE.match(runtime.image("127.0.0.1:5000")), runtime.image("127.0.0.1:5000")
    assert len({r.repository for r in CATALOGUE.values()}) == len(CATALOGUE)


def test_an_image_is_named_by_its_recipe():
    a = Runtime("x", "x", "bookworm", ("python3", "ffmpeg"), ("python3",))
    assert a.tag == Runtime("x", "other words", "bookworm", ("ffmpeg", "python3"), ("python3",)).tag
    assert a.tag != Runtime("x", "x", "trixie", ("python3", "ffmpeg"), ("python3",)).tag
    assert a.tag != Runtime("x", "x", "bookworm", ("python3",), ("python3",)).tag


def test_the_build_takes_the_suite_the_packages_and_records_their_versions():
    runtime = CATALOGUE["python-datascience"]
    cmd = mmdebstrap_command(runtime, "/tmp/x.tar")
    assert cmd[0] == "mmdebstrap" and cmd[-3:] == ["bookworm", "/tmp/x.tar", "http://deb.debian.org/debian"]
    assert "--include=" + ",".join(runtime.packages) in cmd
    assert any(c.startswith("--customize-hook=") and "/etc/rgrid-image-packages" in c for c in cmd)
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in cmd
    changes = image_changes(runtime)
    assert 'CMD ["python3"]' in changes and "WORKDIR /work" in changes
    assert "LABEL org.rgrid.runtime=python-datascience" in changes

"""The runtime catalogue (rgrid_core.runtimes), the image recipe built from it (rgrid_service.images),
`rgrid runtimes`, and a worker without Docker asked for an image-only runtime. The images and the
containers themselves: tests/docker."""
from __future__ import annotations

import json
import os
import re
import subprocess

from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME, SUPPORTED_RUNTIMES, Runtime
from rgrid_runner.runner import run_execution
from rgrid_service.images import image_changes, mmdebstrap_command
from tests.conftest import RGRID
from tests.httpstandin import server  # noqa: F401 - the fixture
from tests.unit.test_runner_api import _finish_body, _grid

from rgrid_core import workerwire as wire

# A Docker reference: repository path components and a tag (https://docs.docker.com/reference/cli/docker/image/tag/).
REFERENCE = re.compile(r"^127\.0\.0\.1:5000/[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*:[\w][\w.-]{0,127}$")


def test_the_catalogue_has_what_the_issue_names_and_every_image_name_is_a_docker_reference():
    assert {"python:3.11", "python-datascience", "ffmpeg", "node:20"} <= set(SUPPORTED_RUNTIMES)
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


def test_rgrid_runtimes_lists_the_catalogue():
    shown = subprocess.run([RGRID, "runtimes", "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [r["name"] for r in rows] == list(CATALOGUE)
    assert next(r for r in rows if r["name"] == "python-datascience")["packages"][1:] == [
        "python3-numpy", "python3-pandas", "python3-scipy", "python3-matplotlib", "python3-sklearn"]
    table = subprocess.run([RGRID, "runtimes"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert "python:3.11 (default)" in table.stdout and "node:20" in table.stdout


def test_a_worker_without_docker_fails_an_image_runtime_with_a_sentence(server, tmp_path):
    client, settings = _grid(server, tmp_path)
    claim = server.answers[("POST", wire.CLAIM.format(id="ex1"))][0][1]
    claim["runtime"] = "python-datascience"
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    assert settings.docker_host is None
    assert run_execution("ex1", client, settings) == "sandbox-error"
    body = _finish_body(server)
    assert body["status"] == "failed"
    assert body["reason"] == ("Runtime python-datascience needs Docker, which this worker does not have; "
                              "run it with --runtime python:3.11 or on a worker with Docker.")

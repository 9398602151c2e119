"""`rgrid run --requirements`: what the CLI and the API accept, how a layer is named (by runtime tag
and file hash), what the build's pip is told, what a person reads when pip fails, and a worker
without Docker refusing it with a sentence. (Building, caching and sharing real layers:
tests/docker/test_requirements_layers.py.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rgrid.cli import app, connect, run
from rgrid_core.constants import REQUIREMENTS_MAX_CHARS
from rgrid_core.runtimes import CATALOGUE
from rgrid_runner import layers, sandbox
from rgrid_runner.runner import _sandbox_starter
from rgrid_service.api import schemas, service


def body(**fields) -> schemas.CreateExecution:
    return schemas.CreateExecution(script="job.py", inputs=[dict(name="job.py", size=1, sha256="0" * 64, md5="0" * 32)],
                                   **fields)


def test_the_api_takes_requirements_with_a_python_runtime_only():
    for runtime in ("python:3.11", "python-datascience", "ffmpeg"):
        assert service.problem_with(body(runtime=runtime, requirements="six==1.16.0\n")) is None
    problem = service.problem_with(body(runtime="node:20", requirements="six==1.16.0\n"))
    assert problem.startswith("--requirements installs Python packages, and runtime node:20 has no Python")
    assert "python:3.11" in problem
    assert "NUL" in service.problem_with(body(requirements="six\x00"))
    with pytest.raises(ValidationError):
        body(requirements="x" * (REQUIREMENTS_MAX_CHARS + 1))


def test_a_layer_is_named_by_the_runtimes_tag_and_the_files_hash():
    py, ds = CATALOGUE["python:3.11"], CATALOGUE["python-datascience"]
    repo, tag = layers.layer_name(py, "10.10.0.2:5000", "six==1.16.0\n")
    assert repo == "10.10.0.2:5000/rgrid/req-python-3.11" and tag.startswith(py.tag + "-")
    assert layers.layer_name(py, "10.10.0.2:5000", "six==1.16.0\n") == (repo, tag)  # every worker agrees
    assert layers.layer_name(py, "10.10.0.2:5000", "six==1.15.0\n")[1] != tag
    assert layers.layer_name(ds, "10.10.0.2:5000", "six==1.16.0\n")[0] != repo
    assert len(tag) <= 128  # Docker's limit for a tag


def test_the_builds_pip_installs_wheels_only_with_the_workers_index_trust_and_proxy():
    conf = layers.pip_config({"PIP_INDEX_URL": "https://pypi.example/simple", "PIP_PROXY": "http://proxy:3128",
                              "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_FIND_LINKS": "/opt/wheels"},
                             "/rgrid-ca/ca.crt")
    lines = conf.splitlines()
    assert lines[0] == "[global]"
    assert "only-binary = :all:" in lines and "break-system-packages = true" in lines
    assert "index-url = https://pypi.example/simple" in lines and "proxy = http://proxy:3128" in lines
    assert "cert = /rgrid-ca/ca.crt" in lines
    assert "/opt/wheels" not in conf  # a folder of the worker's that the build cannot see
    assert "127.0.0.1:9" not in conf  # the closed port Ray's processes get as their proxy
    assert "index-url" not in layers.pip_config({}, None)


def test_a_failed_pip_gives_a_sentence_and_its_last_lines():
    output = "\n".join(f"line {n}" for n in range(30)) + "\nERROR: No matching distribution found for nonexistent-pkg\n"
    sentence = layers.failure_sentence("python:3.11", output)
    assert sentence.startswith("The packages in requirements.txt could not be installed on python:3.11: check "
                               "their names and versions")
    assert sentence.endswith("ERROR: No matching distribution found for nonexistent-pkg")
    assert "line 29" in sentence and "line 20" not in sentence  # the last lines, not all of them


def test_the_runs_log_says_whether_the_layer_was_built_pulled_or_already_here():
    image = "127.0.0.1:5000/rgrid/req-python-3.11:abc-def"
    assert "installed into a new layer (abc-def)" in layers.Layer(image, "built", 7.5, True).note()
    assert "pulled from the registry" in layers.Layer(image, "pulled", 0.5).note()
    assert "already on this worker" in layers.Layer(image, "present", 0.0).note()


def test_a_worker_without_docker_refuses_requirements_with_a_sentence(tmp_path):
    ex = SimpleNamespace(runtime="python:3.11", script="job.py", args=[], requirements="six==1.16.0\n")
    with pytest.raises(sandbox.SandboxError, match="--requirements needs a worker with Docker"):
        _sandbox_starter(SimpleNamespace(sandbox_niceness=None), ex, tmp_path, {}, None, None)


@pytest.fixture
def sent(tmp_path, monkeypatch):
    seen = {}

    def submit(c, script, args, env, runtime, timeout, requirements=None):
        seen.update(runtime=runtime, requirements=requirements)
        return {"id": "ex-000000000001", "status": "queued"}

    monkeypatch.setattr(connect, "client", lambda start_local=False: object())
    monkeypatch.setattr(run, "submit", submit)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text("import six\n")
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    return seen


def test_the_cli_sends_the_files_text(sent):
    r = CliRunner().invoke(app, ["run", "-d", "--requirements", "requirements.txt", "job.py"])
    assert r.exit_code == 0, r.output
    assert sent == {"runtime": "python:3.11", "requirements": "six==1.16.0\n"}


def test_the_cli_refuses_a_missing_file_or_a_runtime_without_python(sent):
    r = CliRunner().invoke(app, ["run", "-d", "--requirements", "nothere.txt", "job.py"])
    assert r.exit_code == 1 and "The requirements file nothere.txt does not exist" in r.output
    r = CliRunner().invoke(app, ["run", "-d", "--runtime", "node:20", "--requirements", "requirements.txt", "job.py"])
    assert r.exit_code == 1 and "runtime node:20 has no Python" in r.output
    assert sent == {}  # nothing was sent

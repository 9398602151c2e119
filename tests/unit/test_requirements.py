"""`rgrid run --requirements`: what the CLI and the API accept, how a layer is named (by runtime tag
and file hash), what the build's pip is told, what a person reads when pip fails, and a worker
without Docker refusing it with a sentence. (Building, caching and sharing real layers:
tests/docker/test_requirements_layers.py.)"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rgrid.cli import app, connect, run
from rgrid_core.constants import REQUIREMENTS_MAX_CHARS
from rgrid_core import requirements as requirement_lines
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


def test_the_builds_download_fetches_wheels_only_with_the_workers_index_trust_and_proxy():
    conf = layers.pip_config({"PIP_INDEX_URL": "https://pypi.example/simple", "PIP_PROXY": "http://proxy:3128",
                              "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_FIND_LINKS": "/opt/wheels"},
                             "/rgrid-ca/ca.crt")
    lines = conf.splitlines()
    assert lines[0] == "[global]"
    assert "only-binary = :all:" in lines
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


# --- what a requirements file may hold (rgrid_core.requirements) ------------------------------

REJECTED = [
    "-r base.txt", "--requirement=base.txt", "-c constraints.txt", "-e .", "-e git+https://example.org/x.git",
    "--index-url https://evil.example/simple", "-i https://evil.example/simple", "--extra-index-url https://x/",
    "--no-binary :all:", "--no-binary=:all: six", "--find-links /tmp/wheels", "-f https://x/", "--pre",
    "six @ https://example.org/six-1.16.0.tar.gz", "six@file:///tmp/six.whl",
    "./six", "../six", "/tmp/six-1.16.0-py2.py3-none-any.whl", "six-1.16.0-py2.py3-none-any.whl", "six.tar.gz",
    "https://example.org/six-1.16.0.tar.gz", "git+https://example.org/six.git", "file:six",
    "six==1.16.0 --hash=sha256:00", "six==${SECRET}", "six \\", "six==1.16.0; ", "not a package",
]
ACCEPTED = """# the packages the script imports

six
numpy==1.26.4  # pinned
pandas[performance, excel]>=2,<3
scipy~=1.11 ; python_version >= "3.10" and sys_platform == "linux"
Requests[socks]!=2.30.*
"""


@pytest.mark.parametrize("line", REJECTED)
def test_a_line_that_is_not_a_package_is_refused_with_a_sentence(line):
    problem = requirement_lines.problem(f"six==1.16.0\n{line}\n")
    assert problem is not None, line
    assert problem.startswith("Line 2 of the requirements file") and "package names and versions only" in problem
    assert "-r, -c, -e, --index-url" in problem and "URLs are not supported" in problem


def test_names_extras_versions_markers_comments_and_blank_lines_are_accepted():
    assert requirement_lines.problem(ACCEPTED) is None
    assert requirement_lines.problem("") is None and requirement_lines.problem("# nothing\n\n") is None
    assert "NUL" in requirement_lines.problem("six\x00")


def test_the_normalised_text_is_what_makes_two_files_one_layer():
    same = "# other comment\nREQUESTS[SOCKS] != 2.30.*\nnumpy == 1.26.4\n\nsix\nSix\n" \
           "Pandas[Excel,Performance] <3,>=2\nscipy ~= 1.11; python_version>='3.10' and sys_platform=='linux'\n"
    assert requirement_lines.normalised(ACCEPTED) == requirement_lines.normalised(same)
    assert requirement_lines.normalised(ACCEPTED).splitlines() == [
        "numpy==1.26.4", 'pandas[excel,performance]<3,>=2', "requests[socks]!=2.30.*",
        'scipy~=1.11; python_version >= "3.10" and sys_platform == "linux"', "six"]
    assert requirement_lines.normalised("six==1.15.0\n") != requirement_lines.normalised("six==1.16.0\n")
    assert requirement_lines.normalised("# none\n") == ""
    with pytest.raises(ValueError):
        requirement_lines.normalised("-r base.txt\n")


def test_the_api_refuses_a_pip_option_and_stores_the_normalised_text():
    problem = service.problem_with(body(requirements="six\n--index-url https://evil.example/simple\n"))
    assert problem.startswith("Line 2 of the requirements file") and "URLs are not supported" in problem
    problem = service.problem_with(body(requirements="six @ https://example.org/six.tar.gz\n"))
    assert "package names and versions only" in problem
    with pytest.raises(service.Invalid) as refused:
        service.check_one(body(requirements="-e .\n"))
    assert refused.value.status_code == 400


def test_the_cli_refuses_a_pip_option_before_uploading(sent, tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n-r base.txt\n")
    r = CliRunner().invoke(app, ["run", "-d", "--requirements", "requirements.txt", "job.py"])
    assert r.exit_code == 1
    said = " ".join(r.output.split())
    assert "requirements.txt: Line 2 of the requirements file ('-r base.txt') is not a package" in said
    assert "-r, -c, -e, --index-url, other pip options, paths and URLs are not supported" in said
    assert sent == {}  # nothing was sent


def test_the_worker_refuses_a_pip_option_again_before_any_docker_call(tmp_path):
    class NoDocker:
        def __getattr__(self, name):
            raise AssertionError(f"the engine was asked for {name}")

    with pytest.raises(layers.RequirementsError, match="is not a package"):
        layers.ensure_layer(NoDocker(), CATALOGUE["python:3.11"], "base", "six\n--no-binary :all:\n",
                            "127.0.0.1:5000", tmp_path)
    with pytest.raises(layers.RequirementsError, match="lists no packages"):
        layers.ensure_layer(NoDocker(), CATALOGUE["python:3.11"], "base", "# nothing\n", "127.0.0.1:5000", tmp_path)


def test_a_layer_belongs_to_one_tenant():
    from rgrid_service.api.workerapi import layer_scope

    py = CATALOGUE["python:3.11"]
    mine, theirs = layer_scope("tenant-a"), layer_scope("tenant-b")
    assert mine != theirs and mine == layer_scope("tenant-a") and "tenant" not in mine
    repo_a, tag_a = layers.layer_name(py, "r:5000", "six\n", mine)
    repo_b, tag_b = layers.layer_name(py, "r:5000", "six\n", theirs)
    assert repo_a != repo_b and mine in repo_a and theirs in repo_b
    assert repo_a == f"r:5000/rgrid/req-{mine}-python-3.11"


def test_the_install_step_uses_the_downloaded_wheels_only():
    lines = layers.install_config().splitlines()
    assert "no-index = true" in lines and f"find-links = {layers.WHEELS}" in lines
    assert "only-binary = :all:" in lines
    assert not any(line.startswith(("index-url", "extra-index-url", "proxy", "cert")) for line in lines)


class FakeContainer:
    """A build step's container as docker-py shows it: running for `runs` looks, then this State."""

    def __init__(self, state=None, runs=0, lost=False):
        self.state, self.runs, self.lost, self.killed, self.status, self.attrs = state or {}, runs, lost, False, "running", {}

    def reload(self):
        if self.lost:
            raise ConnectionError("the socket is gone")
        if self.runs <= 0 or self.killed:
            self.status, self.attrs = "exited", {"State": self.state}
        self.runs -= 1

    def kill(self):
        self.killed = True


def test_a_build_step_is_killed_when_the_run_is_stopped(monkeypatch):
    import threading

    monkeypatch.setattr(layers, "POLL_SECONDS", 0.01)
    stop = threading.Event()
    stop.set()
    box = FakeContainer(runs=10**6)
    with pytest.raises(layers.BuildStopped):
        layers._wait(box, CATALOGUE["python:3.11"], stop)
    assert box.killed


def test_build_failures_say_what_happened(monkeypatch):
    monkeypatch.setattr(layers, "POLL_SECONDS", 0.01)
    py = CATALOGUE["python:3.11"]
    with pytest.raises(layers.RequirementsError, match="lost its Docker engine"):
        layers._wait(FakeContainer(lost=True), py, None)
    monkeypatch.setattr(layers, "BUILD_TIMEOUT", 0.0)
    box = FakeContainer(runs=10**6)
    with pytest.raises(layers.RequirementsError, match="did not finish within"):
        layers._wait(box, py, None)
    assert box.killed
    monkeypatch.setattr(layers, "BUILD_TIMEOUT", 900.0)
    assert layers._wait(FakeContainer({"ExitCode": 137, "OOMKilled": True}, runs=2), py, None)["OOMKilled"]


def test_an_oom_killed_pip_is_reported_as_out_of_memory():
    py = CATALOGUE["python:3.11"]

    class Client:
        class containers:
            @staticmethod
            def create(*args, **kwargs):
                box = FakeContainer({"ExitCode": 137, "OOMKilled": True})
                box.start = lambda: None
                box.remove = lambda force: None
                return box

    with pytest.raises(layers.RequirementsError, match=r"ran out of memory \(512 MB\) during pip's install"):
        layers._step(Client, py, "base", ["pip"], SimpleNamespace(memory_mb=512, max_processes=64), None, "install")


def test_a_run_canceled_while_its_layer_is_built_starts_no_script(monkeypatch):
    """The keeper's refused renew stops the build; the runner reports the attempt fenced."""
    from rgrid_runner import container, runner
    from rgrid_runner.workerclient import Fenced

    class Worker:
        canceled = False

        def renew(self, *args, **kwargs):
            return not self.canceled

    worker = Worker()

    def ensure_layer(*args, stop=None, **kwargs):
        worker.canceled = True  # canceled while the build runs
        assert stop.wait(5), "the keeper never said the lease was lost"
        raise layers.BuildStopped()

    monkeypatch.setattr(container, "ensure_image", lambda client, runtime, registry, digest: "base")
    monkeypatch.setattr(runner, "_docker", lambda host: object())
    monkeypatch.setattr(layers, "ensure_layer", ensure_layer)
    settings = SimpleNamespace(lease_check_interval_seconds=0.01, docker_host="unix:///x", image_registry="r:5000",
                               work_root="/tmp", dead_after_seconds=1.0)
    lease = runner.Lease("ex-000000000001", 1)
    ex = SimpleNamespace(runtime="python:3.11", requirements="six\n", layer_scope="abc")
    with pytest.raises(Fenced):
        runner._run_image(worker, settings, lease, ex, None)


def test_a_run_canceled_just_after_its_layer_was_made_starts_no_script(monkeypatch):
    """The renew that carries the layer's note is refused: no container starts."""
    from rgrid_runner import container, runner
    from rgrid_runner.workerclient import Fenced

    monkeypatch.setattr(container, "ensure_image", lambda client, runtime, registry, digest: "base")
    monkeypatch.setattr(runner, "_docker", lambda host: object())
    monkeypatch.setattr(layers, "ensure_layer", lambda *a, **k: layers.Layer("r:5000/rgrid/req-x:t-h", "present", 0.0))
    monkeypatch.setattr(runner, "_renew_retrying", lambda *a, **k: False)
    settings = SimpleNamespace(lease_check_interval_seconds=60, docker_host="unix:///x", image_registry="r:5000",
                               work_root="/tmp")
    ex = SimpleNamespace(runtime="python:3.11", requirements="six\n", layer_scope="abc")
    with pytest.raises(Fenced):
        runner._run_image(object(), settings, runner.Lease("ex-000000000002", 1), ex, None)
    monkeypatch.setattr(runner, "_renew_retrying", lambda *a, **k: True)
    assert runner._run_image(object(), settings, runner.Lease("ex-000000000003", 1), ex, None) == "r:5000/rgrid/req-x:t-h"


def test_the_build_downloads_unprivileged_then_installs_without_a_network(tmp_path, monkeypatch):
    """What each step's container is given: the download the network but no root and no secrets'
    folder; the install no network; only the install is committed."""
    secrets = tmp_path / "etc-rgrid"
    secrets.mkdir()
    (secrets / "worker.env").write_text("RGRID_WORKER_TOKEN=secret\n")
    (secrets / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(secrets / "ca.pem"))
    created = []

    class Client:
        class containers:
            @staticmethod
            def create(image, command, **options):
                box = FakeContainer({"ExitCode": 0})
                box.start = lambda: None
                box.remove = lambda force: None
                box.commit = lambda **kw: created[-1].__setitem__("committed", kw)
                settings = [v["bind"] for v in options["volumes"].values()].index(layers.SETTINGS)
                folder = Path(list(options["volumes"])[settings])
                created.append(dict(command=command, options=options,
                                    files={f.name: f.read_text() for f in folder.iterdir()}))
                return box

    (tmp_path / "layers").mkdir()
    layers._build(Client, CATALOGUE["python:3.10"], "base", "six==1.16.0\n", "r:5000/rgrid/req-x", "t-h",
                  tmp_path / "layers", SimpleNamespace(memory_mb=512, max_processes=64))
    download, install = created
    assert download["command"][download["command"].index("-m") + 2] == "download"
    assert "--only-binary=:all:" in download["command"]
    assert download["options"]["network_mode"] == "host" and not download["options"]["user"].startswith("0:")
    assert install["command"][install["command"].index("-m") + 2] == "install" and "--no-index" in install["command"]
    assert install["options"]["network_mode"] == "none"
    for step in (download, install):
        assert str(secrets) not in step["options"]["volumes"]  # the CA file is copied, its folder never mounted
        assert step["options"]["cap_drop"] == ["ALL"] and step["options"]["mem_limit"] == 512 * 1024 * 1024
        assert step["files"]["requirements.txt"] == "six==1.16.0\n"
        assert step["files"]["ca.pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "committed" in install and "committed" not in download
    assert f"cert = {layers.SETTINGS}/ca.pem" in download["files"]["pip.conf"]

"""The runtime catalogue (rgrid_core.runtimes), the image recipe built from it (rgrid_service.images),
`rgrid runtimes`, and a worker without Docker asked for an image-only runtime. The images and the
containers themselves: tests/docker."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from rgrid_core.runtimes import CATALOGUE, DEFAULT_RUNTIME, SUPPORTED_RUNTIMES, Runtime
from rgrid_runner.runner import run_execution
from rgrid.cli.runtimes import on_workers, size
from rgrid_service import gomodpython
from rgrid_service.api.runtimes import can_run, runtime_views
from rgrid_service.images import BuildError, image_changes, mmdebstrap_command
from tests.conftest import RGRID
from tests.httpstandin import server  # noqa: F401 - the fixture
from tests.unit.test_runner_api import _finish_body, _grid

from rgrid_core import workerwire as wire

# A Docker reference: repository path components and a tag (https://docs.docker.com/reference/cli/docker/image/tag/).
REFERENCE = re.compile(r"^127\.0\.0\.1:5000/[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*:[\w][\w.-]{0,127}$")


def test_the_catalogue_has_what_the_issue_names_and_every_image_name_is_a_docker_reference():
    assert {"python:3.11", "python:3.10", "python-datascience", "ffmpeg", "node:20"} <= set(SUPPORTED_RUNTIMES)
    assert DEFAULT_RUNTIME in CATALOGUE and CATALOGUE[DEFAULT_RUNTIME].sandbox
    for runtime in CATALOGUE.values():
        assert REFERENCE.match(runtime.image("127.0.0.1:5000")), runtime.image("127.0.0.1:5000")
    assert len({r.repository for r in CATALOGUE.values()}) == len(CATALOGUE)


def test_an_image_is_named_by_its_recipe():
    a = Runtime("x", "x", "bookworm", ("python3", "ffmpeg"), ("python3",))
    assert a.tag == Runtime("x", "other words", "bookworm", ("ffmpeg", "python3"), ("python3",)).tag
    assert a.tag != Runtime("x", "x", "trixie", ("python3", "ffmpeg"), ("python3",)).tag
    assert a.tag != Runtime("x", "x", "bookworm", ("python3",), ("python3",)).tag


def test_python_310_pins_its_module_and_a_new_pin_is_a_new_image():
    runtime = CATALOGUE["python:3.10"]
    assert runtime.python.module == "github.com/kluctl/go-embed-python"
    assert runtime.python.version.startswith("v0.0.0-3.10.") and runtime.python.h1.startswith("h1:")
    assert runtime.recipe()["python"]["h1"] == runtime.python.h1
    assert runtime.tag != replace(runtime, python=replace(runtime.python, h1="h1:another=")).tag
    assert runtime.tag != replace(runtime, python=replace(runtime.python, version="v0.0.0-3.10.17-1")).tag
    assert "python" not in CATALOGUE["python:3.11"].recipe()  # the other images keep their tags


def test_the_python_310_build_lays_its_interpreter_over_debian(tmp_path):
    runtime = CATALOGUE["python:3.10"]
    cmd = mmdebstrap_command(runtime, "/tmp/x.tar", tmp_path / "python3.10")
    assert not any(c.startswith("--include=") for c in cmd)  # Debian's essential set only
    assert f"--customize-hook=copy-in {tmp_path / 'python3.10'} /usr/local" in cmd
    for name in ("python3", "python3.10", "python"):
        assert f'--customize-hook=ln -sf /usr/local/python3.10/bin/python3.10 "$1/usr/local/bin/{name}"' in cmd
    assert any(runtime.python.h1 in c and "/etc/rgrid-image-packages" in c for c in cmd)
    with pytest.raises(BuildError):
        mmdebstrap_command(runtime, "/tmp/x.tar")


def _module_tree(root: Path, files: list[dict], contents: dict[str, bytes]) -> Path:
    root.mkdir()
    (root / "files.json").write_text(json.dumps({"contentHash": "x", "files": files}))
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return root


def test_the_interpreter_is_laid_out_as_files_json_lists_it(tmp_path):
    tree = _module_tree(tmp_path / "tree", [
        {"name": "bin", "size": 0, "perm": (1 << 31) | 0o755},
        {"name": "bin/python3.10", "size": 5, "perm": 0o775, "compressed": True},
        {"name": "bin/python3", "size": 10, "perm": 1 << 27, "symlink": "python3.10"},
        {"name": "lib", "size": 0, "perm": (1 << 31) | 0o755},
        {"name": "lib/os.py", "size": 3, "perm": 0o664},
    ], {"bin/python3.10.gz": b"ELF!!", "lib/os.py": b"x=1"})
    assert gomodpython.lay_out(tree, tmp_path / "out") == 5
    out = tmp_path / "out"
    assert (out / "bin/python3.10").read_bytes() == b"ELF!!" and (out / "bin/python3.10").stat().st_mode & 0o777 == 0o775
    assert os.readlink(out / "bin/python3") == "python3.10"
    assert (out / "lib/os.py").read_bytes() == b"x=1" and (out / "lib/os.py").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("entry, contents, said", [
    ({"name": "os.py", "size": 4, "perm": 0o664}, {"os.py": b"x=1"}, "os.py is 3 bytes, files.json says 4"),
    ({"name": "../escape", "size": 0, "perm": 0o664}, {}, "outside its tree"),
    ({"name": "etc", "size": 0, "perm": 1 << 27, "symlink": "/etc"}, {}, "to an absolute path"),
    ({"name": "up", "size": 0, "perm": 1 << 27, "symlink": "../.."}, {}, "outside its tree"),
])
def test_a_tree_that_is_not_what_files_json_says_stops_the_build(tmp_path, entry, contents, said):
    tree = _module_tree(tmp_path / "tree", [entry], contents)
    with pytest.raises(gomodpython.FetchError, match=re.escape(said)):
        gomodpython.lay_out(tree, tmp_path / "out")


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


def test_rgrid_runtimes_without_a_grid_lists_the_catalogue(tmp_path):
    alone = {**os.environ, "RGRID_HOME": str(tmp_path), "COLUMNS": "200"}
    alone.pop("RGRID_API_URL", None)
    shown = subprocess.run([RGRID, "runtimes", "--json"], capture_output=True, text=True, timeout=60, env=alone)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["runtimes"]
    assert [r["name"] for r in rows] == list(CATALOGUE)
    assert next(r for r in rows if r["name"] == "python-datascience")["packages"][1:] == [
        "python3-numpy", "python3-pandas", "python3-scipy", "python3-matplotlib", "python3-sklearn"]
    assert {(r["size_bytes"], r["workers_active"]) for r in rows} == {(None, None)}
    table = subprocess.run([RGRID, "runtimes"], capture_output=True, text=True, timeout=60, env=alone)
    assert "python:3.11 (default)" in table.stdout and "node:20" in table.stdout
    assert "No grid is running" in table.stderr


def _held(*names: str, size: int = 5_000_000) -> list[dict]:
    return [{"runtime": n, "tag": CATALOGUE[n].tag, "size_bytes": size} for n in names]


def test_the_grid_says_which_active_workers_can_run_each_runtime():
    everything = _held(*CATALOGUE)
    stale = [{**i, "tag": "0" * 16} if i["runtime"] == "node:20" else i for i in _held(*CATALOGUE)]
    views = {v.name: v for v in runtime_views([("w-1", everything), ("w-2", stale), ("w-3", None)])}
    # w-3 has no Docker: it runs python:3.11 in bubblewrap, nothing else; w-2 holds an older node:20.
    assert (views["python:3.11"].workers_ready, views["python:3.11"].workers_missing) == (3, [])
    assert (views["python:3.10"].workers_ready, views["python:3.10"].workers_missing) == (2, ["w-3"])
    assert (views["node:20"].workers_ready, views["node:20"].workers_missing) == (1, ["w-2", "w-3"])
    assert {v.workers_active for v in views.values()} == {3}
    assert views["ffmpeg"].size_bytes == 5_000_000 and views["ffmpeg"].image_tag == CATALOGUE["ffmpeg"].tag
    assert runtime_views([])[0].size_bytes is None  # no worker holds it: no size
    assert can_run(CATALOGUE["python:3.11"], []) is False  # Docker, but not the image


def test_the_table_says_where_each_runtime_is_missing():
    row = {"workers_active": 3, "workers_ready": 1, "workers_missing": ["w-2", "w-3"], "size_bytes": 1_208_000_000}
    assert on_workers(row) == "1/3 (not on w-2, w-3)"
    assert on_workers({**row, "workers_ready": 3, "workers_missing": []}) == "every worker"
    assert on_workers({**row, "workers_active": 0, "workers_ready": 0, "workers_missing": []}) == "no active workers"
    assert size(row) == "1,208 MB" and size({"size_bytes": None}) == "-"


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

"""`rgrid run --requirements requirements.txt` on a local grid whose worker has Docker: the worker
builds a layer with the file's packages on the run's runtime (wheels downloaded from the worker's
package index, then installed with no network), the script imports them without a network, the next run uses the layer
without building it (also for the same packages written differently), two runs asking for a new
layer at once build it once, another engine pulls it from the registry instead of building it, a
package that does not exist fails the run with pip's own last lines, and a pip option is refused
before anything is uploaded.

The index is the tests' own: a PEP 503 "simple" index on 127.0.0.1 serving wheels the tests make,
named to the workers by PIP_INDEX_URL as an operator would name a mirror, so no test reaches PyPI."""
from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid, wait_for_active_workers

pytestmark = [pytest.mark.docker, pytest.mark.grid]

PACKAGE = "rgrid-testpkg"  # the index's one project, in two versions
VERSIONS = ("1.0.0", "1.1.0")

# The script tries the index it was built from (its address is the script's argument): the build
# reached it, the script must not.
USES_PACKAGE = """import rgrid_testpkg, urllib.request, sys
print("rgrid-testpkg", rgrid_testpkg.__version__)
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
    print("network: yes")
except Exception:
    print("network: no")
"""


def make_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of rgrid_testpkg `version`: what `pip wheel` makes of a one-module project."""
    dist = f"rgrid_testpkg-{version}.dist-info"
    files = {
        "rgrid_testpkg/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: rgrid-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"rgrid_testpkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def package_index():
    """The tests' package index on 127.0.0.1: /simple/rgrid-testpkg/ lists the two wheels."""
    root = Path(tempfile.mkdtemp(prefix="rgrid-index-", dir="/tmp"))
    project = root / "simple" / PACKAGE
    project.mkdir(parents=True)
    links = []
    for version in VERSIONS:
        wheel = make_wheel(project, version)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        links.append(f'<a href="{wheel.name}#sha256={sha}">{wheel.name}</a><br>')
    (project / "index.html").write_text("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>\n")
    (root / "simple" / "index.html").write_text(f'<!DOCTYPE html><html><body><a href="{PACKAGE}/">{PACKAGE}</a></body></html>\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + f"{PACKAGE}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the tests' package index did not start")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class GridWithIndex(Grid):
    index: str = ""  # the address of the package index its workers build layers from


@pytest.fixture(scope="module")
def grid(package_index):
    from rgrid_service.localgrid import grid as localgrid
    from rgrid_service.localgrid.docker import why_not
    from rgrid_service.settings import ServiceSettings

    reason = why_not(ServiceSettings(_env_file=None, local_docker=True, docker_host=None))
    if reason:
        missing("Docker", reason)
    home, state = start_test_grid("rgr-", {**GRID_ENV, "RGRID_LOCAL_DOCKER": "1",
                                                   "PIP_INDEX_URL": package_index, "PIP_TRUSTED_HOST": "127.0.0.1"}, workers=1)
    grid = GridWithIndex(home, state, package_index)
    try:
        wait_for_active_workers(grid, 1, timeout=300)
        yield grid
    finally:
        localgrid.down(home)
        remove_grid_dirs(home)


LOCAL_TENANT = "local"  # the local grid's key is the tenant `local`'s (rgrid_service.localgrid.bootstrap)


def fresh(packages: str) -> str:
    """A requirements file no earlier session built (the engine keeps its layers between sessions):
    a marker that always holds makes its normalised text new."""
    return f"# rgrid test\n{packages}; platform_release != \"rgrid-{uuid.uuid4().hex}\"\n"


def layer_of(grid: Grid, requirements: str) -> tuple[str, str]:
    from rgrid_core.requirements import normalised
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_runner.layers import layer_name
    from rgrid_service.api.workerapi import layer_scope

    return layer_name(CATALOGUE["python:3.11"], grid.state.image_registry, normalised(requirements),
                      layer_scope(LOCAL_TENANT))


def logs_of(grid: Grid, ex_id: str) -> str:
    with grid.api() as api:
        page = api.get(f"/v1/executions/{ex_id}/logs").json()
    import base64

    return "".join(base64.b64decode(c["data_b64"]).decode(errors="replace") for c in page["chunks"])


def run_with(grid: GridWithIndex, folder: Path, requirements: str, *extra: str) -> subprocess.CompletedProcess:
    """`rgrid run --requirements` of the script that uses the package, given the index's address."""
    (folder / "requirements.txt").write_text(requirements)
    (folder / "uses_package.py").write_text(USES_PACKAGE)
    return grid.rgrid("run", *extra, "--requirements", "requirements.txt", "uses_package.py",
                      grid.index, cwd=folder, timeout=900)


def test_a_layer_is_built_once_then_used_from_the_cache(grid, tmp_path):
    requirements = fresh("rgrid-testpkg==1.1.0")
    first = run_with(grid, tmp_path, requirements)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.decode().splitlines() == ["rgrid-testpkg 1.1.0", "network: no"]  # the script still has none
    assert "installed into a new layer" in first.stderr.decode() and "shared through the registry" in first.stderr.decode()
    # The registry holds it under the tenant's hash, the runtime's tag and the normalised text's hash.
    repository, tag = layer_of(grid, requirements)
    name = repository.split("/", 1)[1]
    answer = httpx.head(f"http://{grid.state.image_registry}/v2/{name}/manifests/{tag}",
                        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert answer.status_code == 200

    # The same packages written differently (case, spaces, another comment) are the same layer.
    written_otherwise = requirements.replace("# rgrid test", "# another comment").replace("rgrid-testpkg==", "RGRID_testpkg == ")
    second = run_with(grid, tmp_path, written_otherwise)
    assert second.returncode == 0, second.stderr.decode()
    assert second.stdout.decode().splitlines()[0] == "rgrid-testpkg 1.1.0"
    assert "already on this worker" in second.stderr.decode() and "installed" not in second.stderr.decode()


def test_two_runs_asking_for_a_new_layer_at_once_build_it_once(grid, tmp_path):
    requirements = fresh("rgrid-testpkg==1.0.0")
    (tmp_path / "requirements.txt").write_text(requirements)
    (tmp_path / "uses_package.py").write_text(USES_PACKAGE)
    ids = [grid.rgrid("run", "-d", "--requirements", "requirements.txt", "uses_package.py", grid.index,
                       cwd=tmp_path)
           for _ in range(2)]
    ids = [r.stdout.decode().strip() for r in ids if r.returncode == 0]
    assert len(ids) == 2
    notes = []
    for ex_id in ids:
        waited = grid.rgrid("logs", "-f", ex_id, timeout=900)
        assert waited.returncode == 0, waited.stderr.decode()
        assert b"rgrid-testpkg 1.0.0" in waited.stdout
        notes.append(logs_of(grid, ex_id))
    built = [n for n in notes if "installed into a new layer" in n]
    assert len(built) == 1, notes
    assert sum("already on this worker" in n for n in notes) == 1, notes


def test_another_engine_pulls_the_layer_instead_of_building_it(grid, tmp_path, monkeypatch):
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_core.imagedigests import published
    from rgrid_runner.container import ensure_image
    from rgrid_service.localgrid import docker as localdocker
    from rgrid_runner.layers import ensure_layer
    from rgrid_service.api.workerapi import layer_scope
    from rgrid_service.dockerhost import DockerEngine

    requirements = fresh("rgrid-testpkg==1.1.0")
    built = run_with(grid, tmp_path, requirements)
    assert built.returncode == 0 and b"installed into a new layer" in built.stderr
    # This process plays the other worker: its pip settings name the same index as the grid's workers.
    monkeypatch.setenv("PIP_INDEX_URL", grid.index)
    monkeypatch.setenv("PIP_TRUSTED_HOST", "127.0.0.1")
    base = Path(tempfile.mkdtemp(prefix="rgrid-e2-other-", dir="/tmp"))
    try:
        with DockerEngine(base / "engine") as other:  # another worker's engine, with nothing in it
            client = other.client()
            runtime = CATALOGUE["python:3.11"]
            image = ensure_image(client, runtime, grid.state.image_registry,
                                 published(localdocker.digests_file())[runtime.name])
            theirs = ensure_layer(client, runtime, image, requirements, grid.state.image_registry, base / "layers",
                                  scope=layer_scope("another tenant"))
            assert theirs.how == "built"  # another tenant's run never gets this tenant's layer
            layer = ensure_layer(client, runtime, image, requirements, grid.state.image_registry, base / "layers",
                                 scope=layer_scope(LOCAL_TENANT))
            assert layer.how == "pulled"
            out = client.containers.run(layer.image, ["python3", "-c", "import rgrid_testpkg; print(rgrid_testpkg.__version__)"],
                                        network_mode="none", remove=True)
            assert out.strip() == b"1.1.0"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_package_that_does_not_exist_fails_the_run_with_pips_last_lines(grid, tmp_path):
    r = run_with(grid, tmp_path, fresh("rgrid-no-such-package-e2==0.0.1"))
    assert r.returncode == 1
    said = r.stderr.decode()
    assert "The packages in requirements.txt could not be installed on python:3.11" in said, said
    assert "No matching distribution found for rgrid-no-such-package-e2==0.0.1" in said, said
    # Nothing else was lost: the grid runs the next one.
    again = run_with(grid, tmp_path, fresh("rgrid-testpkg==1.1.0"))
    assert again.returncode == 0, again.stderr.decode()


def test_a_pip_option_is_refused_before_anything_is_uploaded(grid, tmp_path):
    r = run_with(grid, tmp_path, "rgrid-testpkg==1.1.0\n--no-binary :all:\n")
    assert r.returncode == 1
    said = " ".join(r.stderr.decode().split())
    assert "Line 2 of the requirements file ('--no-binary :all:') is not a package" in said, said
    with grid.api() as api:
        refused = api.post("/v1/executions", json=dict(
            script="job.py", inputs=[dict(name="job.py", size=1, sha256="0" * 64, md5="0" * 32)],
            requirements="rgrid-testpkg @ https://example.org/rgrid_testpkg-1.1.0.tar.gz\n"))
    assert refused.status_code == 400 and "package names and versions only" in refused.text

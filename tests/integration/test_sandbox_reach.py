"""What a script in the sandbox cannot reach, on the real local grid: no Ray port (the head's GCS,
the dashboard of a grid started with one, its own worker's raylet and object manager), not the
API, not the object store, and
no secret (the Ray token, the worker's own token, any other secret of the worker) in its
environment, in /proc or at the token files' paths. Every port is also tried from outside the
sandbox, where it answers, so that a refusal inside means the sandbox, not a closed port."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from rgrid_service.localgrid.layout import ray_token_file, work_root
from tests.raydriver import try_driver

pytestmark = pytest.mark.grid

PROBE = r'''
import json, os, socket, sys
targets, paths = json.loads(sys.argv[1]), json.loads(sys.argv[2])
reach = {}
for kind, addresses in targets.items():
    reach[kind] = []
    for host, port in addresses:
        try:
            socket.create_connection((host, port), timeout=2).close()
            reach[kind].append("connected")
        except OSError as e:
            reach[kind].append(f"{type(e).__name__}: {e}")
seen = {"env": dict(os.environ), "proc": {}, "files": {}}
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    for part in ("environ", "cmdline"):
        try:
            seen["proc"][f"{pid}/{part}"] = open(f"/proc/{pid}/{part}", "rb").read().decode(errors="replace")
        except OSError as e:
            seen["proc"][f"{pid}/{part}"] = f"{type(e).__name__}: {e}"
for path in paths:
    try:
        seen["files"][path] = "read: " + open(path).read()
    except OSError as e:
        seen["files"][path] = f"{type(e).__name__}: {e}"
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
print("PROBE " + json.dumps({"reach": reach, "seen": seen, "interfaces": interfaces}))
'''

KINDS = ("ray gcs", "raylet", "object manager", "api", "s3")  # a default grid runs no Ray dashboard
SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSWORD|KEY|DATABASE_URL")


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition("//")[2].rpartition(":")
    return host, int(port.rstrip("/"))


def worker_secrets(grid) -> dict[str, str]:
    """Secret values a worker's processes hold (read from outside): each worker node's environment
    (its Ray token, and whatever credentials its launch gives it) and the Ray token files."""
    found = {"grid's ray token": ray_token_file(grid.home).read_text().strip(), "api key": grid.state.api_key}
    groups = json.loads((grid.home / "local" / "fleet-process.json").read_text())["groups"]
    for worker, pid in groups.items():
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        for name, _, value in (item.partition("=") for item in raw.split("\0") if item):
            if SECRET_NAMES.search(name) and len(value) >= 12:
                found[f"{worker} {name}"] = value
    return found


@pytest.fixture(scope="module")
def probe(grid, tmp_path_factory):
    """One script through `rgrid run` that tries every port and looks for every token."""
    kind, nodes, _ = try_driver(grid.state.ray_address, tmp_path_factory.mktemp("driver-home"),
                             {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_token_file(grid.home))})
    assert kind == "NODES", nodes
    workers = {n["worker"]: n for n in nodes if n["alive"] and n["worker"]}
    targets = {
        "ray gcs": [host_port(grid.state.ray_address)],
        "raylet": [("127.0.0.1", n["raylet_port"]) for n in workers.values()],
        "object manager": [("127.0.0.1", n["object_manager_port"]) for n in workers.values()],
        "api": [host_port(grid.state.api_url)],
        "s3": [host_port(grid.state.s3_endpoint)],
    }
    # The grid's token file and each worker's, with what they hold (read from outside, now).
    token_files = {str(p): p.read_text().strip()
                   for p in (ray_token_file(grid.home), *sorted(work_root(grid.home).glob(".ray-token-*/token")))}
    secrets = worker_secrets(grid)
    wd = tmp_path_factory.mktemp("probe")
    (wd / "probe.py").write_text(PROBE)
    r = grid.rgrid("run", "probe.py", json.dumps(targets), json.dumps(list(token_files)), cwd=wd)
    assert r.returncode == 0, r.stderr.decode()
    line = next(x for x in r.stdout.decode().splitlines() if x.startswith("PROBE "))
    with grid.api() as api:
        ran = next(e for e in api.get("/v1/executions", params={"limit": 20}).json() if e["script"] == "probe.py")
    return {"targets": targets, "workers": workers, "token_files": token_files, "secrets": secrets,
            "worker": ran["worker_id"], "stdout": line, **json.loads(line[len("PROBE "):])}


@pytest.mark.parametrize("kind", KINDS)
def test_a_sandboxed_script_reaches_no_port(probe, kind):
    tried = probe["reach"][kind]
    assert tried and "connected" not in tried, tried
    for host, port in probe["targets"][kind]:  # the same address answers outside the sandbox
        socket.create_connection((host, port), timeout=5).close()


def test_the_ports_tried_include_its_own_workers(probe):
    own = probe["workers"][probe["worker"]]
    assert ("127.0.0.1", own["raylet_port"]) in map(tuple, probe["targets"]["raylet"])
    assert ("127.0.0.1", own["object_manager_port"]) in map(tuple, probe["targets"]["object manager"])


def test_the_sandbox_has_no_network_interface_but_its_own_loopback(probe):
    assert probe["interfaces"] == ["lo"]


def test_a_sandboxed_script_finds_no_token(probe):
    secrets = probe["secrets"]
    for name in ("RGRID_RAY_AUTH_TOKEN", "RGRID_WORKER_TOKEN"):  # not vacuous: the worker holds both
        assert any(k.endswith(name) for k in secrets), sorted(secrets)
    leaked = [name for name, value in secrets.items() if value in probe["stdout"]]
    assert not leaked, leaked
    assert "1/environ" in probe["seen"]["proc"] and not any("RAY_AUTH" in k for k in probe["seen"]["env"])
    assert len(probe["token_files"]) >= 4  # the grid's and one per worker, all readable from outside
    for path, content in probe["token_files"].items():
        assert content == secrets["grid's ray token"]
        assert not probe["seen"]["files"][path].startswith("read: "), probe["seen"]["files"][path]


def test_a_sandboxed_script_cannot_reach_the_dashboard_of_a_grid_that_has_one(dashboard_grid, tmp_path):
    grid = dashboard_grid
    targets = {"ray dashboard": [host_port(grid.state.dashboard_url)]}
    (tmp_path / "probe.py").write_text(PROBE)
    r = grid.rgrid("run", "probe.py", json.dumps(targets), "[]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    line = next(x for x in r.stdout.decode().splitlines() if x.startswith("PROBE "))
    tried = json.loads(line[len("PROBE "):])["reach"]["ray dashboard"]
    assert tried and "connected" not in tried, tried
    socket.create_connection(targets["ray dashboard"][0], timeout=5).close()  # it answers outside

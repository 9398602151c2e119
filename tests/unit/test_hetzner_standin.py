"""The local Hetzner Cloud API stand-in, driven by the official `hcloud` client as an independent judge.

The stand-in runs under uvicorn on a free 127.0.0.1 port in a thread; servers boot either a fake
booter (recording calls) or the real one (a local process from the server's user_data).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

hcloud = pytest.importorskip("hcloud")
from hcloud import APIException, Client  # noqa: E402
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule  # noqa: E402
from hcloud.images import Image  # noqa: E402
from hcloud.locations import Location  # noqa: E402
from hcloud.networks import Network, NetworkSubnet  # noqa: E402
from hcloud.server_types import ServerType  # noqa: E402
from hcloud.servers import ServerCreatePublicNetwork  # noqa: E402

from rgrid_service.localgrid.hetzner import create_app  # noqa: E402
from rgrid_service.localgrid.hetzner.boot import BootError, parse_user_data  # noqa: E402
from rgrid_service.localgrid.procs import free_ports, group_alive  # noqa: E402

# The client warns about fields Hetzner is phasing out; the stand-in still sends them, as Hetzner does.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "t" * 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Every JSON field hcloud-go's schema structs decode (v2.53; `datacenter` is what older releases read).
SERVER_FIELDS = {"id", "name", "status", "created", "public_net", "private_net", "server_type", "included_traffic",
                 "outgoing_traffic", "ingoing_traffic", "backup_window", "rescue_enabled", "iso", "locked",
                 "datacenter", "location", "image", "protection", "labels", "volumes", "primary_disk_size",
                 "placement_group", "load_balancers"}
SERVER_TYPE_FIELDS = {"id", "name", "description", "category", "cores", "memory", "disk", "storage_type", "cpu_type",
                      "architecture", "included_traffic", "prices", "deprecated", "deprecation", "locations"}
ACTION_FIELDS = {"id", "status", "command", "progress", "started", "finished", "error", "resources"}
NETWORK_FIELDS = {"id", "name", "created", "ip_range", "subnets", "routes", "servers", "load_balancers",
                  "protection", "labels", "expose_routes_to_vswitch"}
FIREWALL_FIELDS = {"id", "name", "labels", "created", "rules", "applied_to"}
VOLUME_FIELDS = {"id", "name", "server", "status", "location", "size", "format", "protection", "labels",
                 "linux_device", "created"}


class FakeBooter:
    def __init__(self):
        self.booted: list[int] = []

    def __call__(self, req):
        self.booted.append(req.server_id)
        return None


@contextmanager
def serving(app):
    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class Env:
    def __init__(self, base: str, booter: FakeBooter | None):
        self.base, self.booter = base, booter
        self.client = Client(token=TOKEN, api_endpoint=f"{base}/v1", poll_interval=0.05)
        self.http = httpx.Client(base_url=base, timeout=10)

    def create(self, name: str, **kw):
        kw.setdefault("server_type", ServerType(name="cx23"))
        kw.setdefault("image", Image(name="debian-12"))
        return self.client.servers.create(name=name, **kw)

    def fault(self, **spec):
        r = self.http.post("/_standin/faults", json=spec)
        assert r.status_code == 201, r.text
        return r.json()["fault"]


@pytest.fixture
def standin(tmp_path, request):
    opts = getattr(request, "param", {})
    booter = None if opts.get("real_booter") else FakeBooter()
    app = create_app(tmp_path / "state", boot_delay=opts.get("boot_delay", 0.2), booter=booter,
                     max_servers=opts.get("max_servers"))
    with serving(app) as base:
        env = Env(base, booter)
        env.state_dir = tmp_path / "state"
        yield env
        env.http.close()


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _ssh_public_key(seed: int) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} test@{seed}"


def test_catalogue_lookups_the_provider_makes(standin):
    cx23 = standin.client.server_types.get_by_name("cx23")
    assert (cx23.cores, cx23.memory, cx23.cpu_type, cx23.architecture) == (2, 4.0, "shared", "x86")
    fsn1 = next(p for p in cx23.prices if p["location"] == "fsn1")
    assert float(fsn1["price_hourly"]["net"]) > 0 and float(fsn1["price_monthly"]["gross"]) > float(fsn1["price_monthly"]["net"])
    assert {"cx33", "cx43", "cpx11", "cpx21", "cpx31", "ccx13"} <= {t.name for t in standin.client.server_types.get_all()}
    assert standin.client.server_types.get_by_name("cx22").deprecation is not None  # retired, still listed
    image = standin.client.images.get_by_name_and_architecture("debian-12", "x86")
    assert (image.architecture, image.type, image.os_flavor) == ("x86", "system", "debian")
    assert standin.client.images.get_by_id(image.id).name == "debian-12"
    assert standin.client.images.get_by_name_and_architecture("ubuntu-24.04", "x86") is not None
    assert {loc.name: loc.network_zone for loc in standin.client.locations.get_all()} == \
        {"fsn1": "eu-central", "nbg1": "eu-central", "hel1": "eu-central"}
    assert {dc.location.name for dc in standin.client.datacenters.get_all()} == {"fsn1", "nbg1", "hel1"}
    raw = standin.http.get("/v1/server_types", params={"name": "cx23"}, headers=AUTH).json()
    assert set(raw["server_types"][0]) >= SERVER_TYPE_FIELDS
    assert raw["meta"]["pagination"] == {"page": 1, "per_page": 25, "previous_page": None, "next_page": None,
                                         "last_page": 1, "total_entries": 1}


def test_servers_create_list_by_labels_paginate_update_delete(standin):
    created = [standin.create(f"w-{i}", labels={"role": "worker", "pool": "a" if i < 2 else "b"},
                              location=Location(name="nbg1")) for i in range(3)]
    first = created[0]
    assert first.server.status == "initializing" and first.action.status == "running"
    assert first.root_password and [a.command for a in first.next_actions] == ["start_server"]
    for c in created:
        c.action.wait_until_finished()
    assert standin.client.servers.get_by_id(first.server.id).status == "running"
    assert sorted(standin.booter.booted) == sorted(c.server.id for c in created)
    standin.client.servers.reboot(created[2].server).wait_until_finished()
    assert _wait(lambda: standin.booter.booted.count(created[2].server.id) == 2)  # a reboot boots again
    assert standin.client.servers.get_by_id(created[2].server.id).status == "running"

    raw = standin.http.get(f"/v1/servers/{first.server.id}", headers=AUTH).json()["server"]
    assert set(raw) >= SERVER_FIELDS
    assert raw["datacenter"]["location"]["name"] == raw["location"]["name"] == "nbg1"
    assert raw["server_type"]["name"] == "cx23" and raw["image"]["name"] == "debian-12"
    assert raw["public_net"]["ipv4"]["ip"] and raw["public_net"]["ipv6"]["ip"].endswith("/64")

    names = lambda sel: sorted(s.name for s in standin.client.servers.get_all(label_selector=sel))  # noqa: E731
    assert names("role=worker") == ["w-0", "w-1", "w-2"]
    assert names("role=worker,pool=b") == ["w-2"]
    assert names("pool!=a") == ["w-2"]
    assert names("pool") == ["w-0", "w-1", "w-2"] and names("!pool") == []
    assert names("pool in (a,b),role==worker") == ["w-0", "w-1", "w-2"]
    assert standin.client.servers.get_by_name("w-1").id == created[1].server.id

    page = standin.client.servers.get_list(page=2, per_page=2)
    assert [s.name for s in page.servers] == ["w-2"]
    p = page.meta.pagination
    assert (p.page, p.per_page, p.previous_page, p.next_page, p.last_page, p.total_entries) == (2, 2, 1, None, 2, 3)

    updated = standin.client.servers.update(first.server, name="w-0b", labels={"role": "spare"})
    assert (updated.name, updated.labels) == ("w-0b", {"role": "spare"})
    assert names("role=worker") == ["w-1", "w-2"]

    standin.client.servers.delete(first.server).wait_until_finished()
    with pytest.raises(APIException) as err:
        standin.client.servers.get_by_id(first.server.id)
    assert err.value.code == "not_found"
    assert len(standin.client.servers.get_all()) == 2
    polled = standin.http.get("/v1/actions", params=[("id", c.action.id) for c in created], headers=AUTH).json()
    assert [a["status"] for a in polled["actions"]] == ["success"] * 3
    assert set(polled["actions"][0]) == ACTION_FIELDS
    listed = standin.http.get(f"/v1/servers/{created[1].server.id}/actions", headers=AUTH).json()["actions"]
    assert {a["command"] for a in listed} == {"create_server", "start_server"}


def test_networks_subnets_and_server_attachment(standin):
    net = standin.client.networks.create(
        name="rgrid", ip_range="10.10.0.0/16", labels={"app": "rgrid"},
        subnets=[NetworkSubnet(ip_range="10.10.1.0/24", network_zone="eu-central", type="cloud")])
    assert net.subnets[0].gateway == "10.10.0.1"
    standin.client.networks.add_subnet(
        net, NetworkSubnet(ip_range="10.10.2.0/24", network_zone="eu-central", type="cloud")).wait_until_finished()
    assert [s.ip_range for s in standin.client.networks.get_by_id(net.id).subnets] == ["10.10.1.0/24", "10.10.2.0/24"]

    with_net = standin.create("a", networks=[net], public_net=ServerCreatePublicNetwork(enable_ipv4=False, enable_ipv6=False))
    assert with_net.server.public_net.ipv4 is None and with_net.server.private_net[0].ip == "10.10.1.1"
    other = standin.create("b")
    other.action.wait_until_finished()
    standin.client.servers.attach_to_network(other.server, Network(id=net.id), ip="10.10.2.7").wait_until_finished()
    server = standin.client.servers.get_by_id(other.server.id)
    assert [(p.network.id, p.ip) for p in server.private_net] == [(net.id, "10.10.2.7")]
    assert server.private_net[0].mac_address
    raw = standin.http.get(f"/v1/networks/{net.id}", headers=AUTH).json()["network"]
    assert set(raw) >= NETWORK_FIELDS and sorted(raw["servers"]) == sorted([with_net.server.id, other.server.id])

    with pytest.raises(APIException) as err:
        standin.client.servers.attach_to_network(server, Network(id=net.id))
    assert err.value.code == "server_already_attached"
    standin.client.servers.detach_from_network(server, Network(id=net.id)).wait_until_finished()
    assert standin.client.servers.get_by_id(server.id).private_net == []

    standin.client.networks.change_protection(net, delete=True).wait_until_finished()
    with pytest.raises(APIException) as err:
        standin.client.networks.delete(net)
    assert err.value.code == "protected"
    standin.client.networks.change_protection(net, delete=False).wait_until_finished()
    standin.client.networks.delete(net)
    assert standin.client.networks.get_all() == []


def test_volumes_attach_detach_resize_protect_delete(standin):
    from hcloud.servers import Server
    from hcloud.volumes import Volume

    server = standin.create("db", location=Location(name="fsn1")).server
    made = standin.client.volumes.create(size=20, name="data", location=Location(name="fsn1"), format="ext4",
                                         labels={"rgrid-role": "control-plane"})
    made.action.wait_until_finished()
    vol = standin.client.volumes.get_by_id(made.volume.id)
    assert (vol.size, vol.format, vol.location.name, vol.server) == (20, "ext4", "fsn1", None)
    assert vol.linux_device == f"/dev/disk/by-id/scsi-0HC_Volume_{vol.id}"
    raw = standin.http.get(f"/v1/volumes/{vol.id}", headers=AUTH).json()["volume"]
    assert set(raw) == VOLUME_FIELDS
    assert [v.id for v in standin.client.volumes.get_all(label_selector="rgrid-role=control-plane")] == [vol.id]

    standin.client.volumes.attach(vol, Server(id=server.id), automount=False).wait_until_finished()
    assert standin.client.volumes.get_by_id(vol.id).server.id == server.id
    assert [v.id for v in standin.client.servers.get_by_id(server.id).volumes] == [vol.id]
    with pytest.raises(APIException) as err:
        standin.client.volumes.attach(vol, Server(id=server.id))
    assert err.value.code == "volume_already_attached"
    with pytest.raises(APIException) as err:
        standin.client.volumes.delete(vol)
    assert err.value.code == "volume_already_attached"

    elsewhere = standin.create("far", location=Location(name="hel1")).server
    standin.client.volumes.detach(vol).wait_until_finished()
    with pytest.raises(APIException) as err:
        standin.client.volumes.attach(vol, Server(id=elsewhere.id))
    assert err.value.code == "invalid_input"
    assert standin.client.servers.get_by_id(server.id).volumes == []

    standin.client.volumes.resize(vol, 30).wait_until_finished()
    with pytest.raises(APIException) as err:
        standin.client.volumes.resize(vol, 25)
    assert err.value.code == "invalid_input"
    with pytest.raises(APIException) as err:
        standin.client.volumes.create(size=5, name="tiny", location=Location(name="fsn1"))
    assert err.value.code == "invalid_input"

    # Created on a server, it is attached there; deleting the server lets it go.
    second = standin.client.volumes.create(size=10, name="logs", server=Server(id=server.id), automount=False)
    assert [a.command for a in second.next_actions] == ["attach_volume"]
    assert standin.client.volumes.get_by_id(second.volume.id).server.id == server.id
    standin.client.servers.delete(Server(id=server.id)).wait_until_finished()
    assert standin.client.volumes.get_by_id(second.volume.id).server is None

    standin.client.volumes.change_protection(vol, delete=True).wait_until_finished()
    with pytest.raises(APIException) as err:
        standin.client.volumes.delete(vol)
    assert err.value.code == "protected"
    standin.client.volumes.change_protection(vol, delete=False).wait_until_finished()
    standin.client.volumes.delete(vol)
    standin.client.volumes.delete(Volume(id=second.volume.id))
    assert standin.client.volumes.get_all() == []
    with pytest.raises(APIException) as err:
        standin.client.volumes.get_by_id(vol.id)
    assert err.value.code == "not_found"


def test_firewalls_rules_applied_to_servers(standin):
    server = standin.create("fw-target", labels={"role": "worker"}).server
    rules = [FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["203.0.113.0/24", "::/0"]),
             FirewallRule(direction="in", protocol="icmp", source_ips=["10.10.0.0/16"], description="ping")]
    made = standin.client.firewalls.create(
        name="workers", rules=rules, resources=[FirewallResource(type="server", server=server)])
    for a in made.actions:
        a.wait_until_finished()
    fw = made.firewall
    assert [r.port for r in fw.rules] == ["22", None] and fw.applied_to[0].server.id == server.id
    raw = standin.http.get(f"/v1/firewalls/{fw.id}", headers=AUTH).json()["firewall"]
    assert set(raw) == FIREWALL_FIELDS
    assert raw["rules"][1] == {"direction": "in", "source_ips": ["10.10.0.0/16"], "destination_ips": [],
                               "protocol": "icmp", "port": None, "description": "ping"}
    assert [f.firewall.id for f in standin.client.servers.get_by_id(server.id).public_net.firewalls] == [fw.id]

    for a in standin.client.firewalls.set_rules(fw, rules[:1]):
        a.wait_until_finished()
    assert len(standin.client.firewalls.get_by_id(fw.id).rules) == 1

    by_label = FirewallResource(type="label_selector", label_selector=FirewallResourceLabelSelector("role=worker"))
    other = standin.client.firewalls.create(name="by-label", resources=[by_label]).firewall
    applied = standin.http.get(f"/v1/firewalls/{other.id}", headers=AUTH).json()["firewall"]["applied_to"]
    assert applied[0]["applied_to_resources"] == [{"type": "server", "server": {"id": server.id}}]
    assert {f.firewall.id for f in standin.client.servers.get_by_id(server.id).public_net.firewalls} == {fw.id, other.id}

    with pytest.raises(APIException) as err:
        standin.client.firewalls.delete(fw)
    assert err.value.code == "resource_in_use"
    with pytest.raises(APIException) as err:
        standin.client.firewalls.set_rules(fw, [FirewallRule(direction="in", protocol="tcp", source_ips=["203.0.113.0/24"])])
    assert err.value.code == "invalid_input" and err.value.details["fields"][0]["name"] == "rules[0].port"
    for a in standin.client.firewalls.remove_from_resources(fw, [FirewallResource(type="server", server=server)]):
        a.wait_until_finished()
    standin.client.firewalls.delete(fw)
    assert [f.name for f in standin.client.firewalls.get_all()] == ["by-label"]


def test_ssh_keys_crud_and_use_at_create(standin):
    key = standin.client.ssh_keys.create(name="ops", public_key=_ssh_public_key(1), labels={"a": "b"})
    assert len(key.fingerprint.split(":")) == 16
    assert standin.client.ssh_keys.get_by_name("ops").id == key.id
    with pytest.raises(APIException) as err:
        standin.client.ssh_keys.create(name="ops", public_key=_ssh_public_key(2))
    assert err.value.code == "uniqueness_error"
    with pytest.raises(APIException) as err:
        standin.client.ssh_keys.create(name="bad", public_key="not a key")
    assert err.value.code == "invalid_input"
    assert standin.create("with-key", ssh_keys=[key]).root_password is None
    assert standin.client.ssh_keys.update(key, name="ops2").name == "ops2"
    standin.client.ssh_keys.delete(key)
    assert standin.client.ssh_keys.get_all() == []


@pytest.mark.parametrize("standin", [{"max_servers": 1}], indirect=True)
def test_error_shapes_auth_and_quota(standin):
    r = standin.http.get("/v1/servers/424242", headers=AUTH)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "server not found", "details": None}}
    assert standin.http.get("/v1/servers").status_code == 401
    assert standin.http.get("/v1/servers", headers={"Authorization": "Basic dTpw"}).json()["error"]["code"] == "unauthorized"
    r = standin.http.post("/v1/servers", content=b"{nope", headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "json_error")

    with pytest.raises(APIException) as err:
        standin.create("x", server_type=ServerType(name="cx999"))
    assert err.value.code == "invalid_input" and err.value.details["fields"][0]["name"] == "server_type"
    with pytest.raises(APIException) as err:
        standin.create("not_a_hostname!")
    assert err.value.code == "invalid_input"
    r = standin.http.post("/v1/servers", headers=AUTH, json={"name": "y", "server_type": "cx23", "image": "debian-12",
                                                             "labels": {"bad key!": "v"}})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_input")

    standin.create("only-one")
    with pytest.raises(APIException) as err:
        standin.create("one-too-many")
    assert err.value.code == "resource_limit_exceeded"
    r = standin.http.post("/v1/servers", headers=AUTH, json={"name": "z", "server_type": "cx23", "image": "debian-12"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "resource_limit_exceeded"
    with pytest.raises(APIException) as err:
        standin.create("only-one")
    assert err.value.code in ("uniqueness_error", "resource_limit_exceeded")


def test_fault_injection_5xx_quota_slow_hang_never_boot(standin):
    standin.fault(kind="5xx", match="^GET /v1/locations$", count=2)
    codes = [standin.http.get("/v1/locations", headers=AUTH) for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 200]
    assert codes[0].json()["error"]["code"] == "service_error"
    standin.fault(kind="5xx", status=500, match="server_types", count=1)
    with pytest.raises(APIException) as err:
        standin.client.server_types.get_all()
    assert err.value.code == "server_error"
    standin.fault(kind="rate_limit", count=1, match="^GET")
    r = standin.http.get("/v1/images", headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (429, "rate_limit_exceeded")

    standin.fault(kind="quota", count=1)
    with pytest.raises(APIException) as err:
        standin.create("q1")
    assert err.value.code == "resource_limit_exceeded"
    standin.create("q2")  # the count is used up

    standin.fault(kind="slow", seconds=0.4, match="datacenters", count=1)
    t0 = time.monotonic()
    standin.client.datacenters.get_all()
    assert time.monotonic() - t0 >= 0.4

    standin.fault(kind="hang", match="^GET /v1/ssh_keys$")
    with pytest.raises(httpx.ReadTimeout):
        standin.http.get("/v1/ssh_keys", headers=AUTH, timeout=0.3)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=standin.http.get("/v1/ssh_keys", headers=AUTH)))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and len(standin.http.get("/_standin/faults").json()["faults"]) == 1
    assert standin.http.delete("/_standin/faults").status_code == 204
    t.join(timeout=5)
    assert result["r"].status_code == 200

    standin.fault(kind="reset", match="^GET /v1/images$", count=1)
    with pytest.raises(httpx.TransportError) as reset:
        standin.http.get("/v1/images", headers=AUTH)
    assert "reset" in str(reset.value).lower(), repr(reset.value)
    assert standin.http.get("/v1/images", headers=AUTH).status_code == 200  # the count is used up

    standin.fault(kind="never_boot", count=1)
    stuck = standin.create("stuck")
    stuck.action.wait_until_finished()
    ok = standin.create("fine")
    ok.action.wait_until_finished()
    time.sleep(0.3)
    assert standin.client.servers.get_by_id(stuck.server.id).status == "initializing"
    assert standin.client.servers.get_by_id(ok.server.id).status == "running"
    assert stuck.server.id not in standin.booter.booted and ok.server.id in standin.booter.booted
    view = {s["name"]: s for s in standin.http.get("/_standin/servers").json()["servers"]}
    assert view["stuck"]["never_boot"] and not view["fine"]["never_boot"]

    # cloud-init time: the server runs at once, its worker service starts init_delay_seconds later
    standin.http.put("/_standin/config", json={"init_delay_seconds": 0.6}).raise_for_status()
    slow = standin.create("slow-init")
    slow.action.wait_until_finished()
    assert standin.client.servers.get_by_id(slow.server.id).status == "running"
    time.sleep(0.3)
    assert slow.server.id not in standin.booter.booted
    assert _wait(lambda: slow.server.id in standin.booter.booted, 5)
    assert standin.http.post("/_standin/faults", json={"kind": "nope"}).status_code == 422


WORKER_USER_DATA = """\
#cloud-config
write_files:
  - path: /etc/rgrid/worker.env
    permissions: "0600"
    content: |
      # the worker's environment
      RGRID_WORKER_ID=w-7
      RGRID_GREETING="hello there"
      OUT={out}
  - path: /etc/systemd/system/rgrid-worker.service
    encoding: b64
    content: {unit}
runcmd:
  - systemctl enable --now rgrid-worker
"""
WORKER_UNIT = """\
[Unit]
Description=rgrid worker
[Service]
EnvironmentFile=/etc/rgrid/worker.env
Environment=EXTRA=from-unit
ExecStart=/opt/rgrid/venv/bin/python3 -c "import json, os, sys, time; \\
    json.dump(dict(os.environ, ARGV=sys.argv[1:]), open(os.environ['OUT'] + '.tmp', 'w')); \\
    os.replace(os.environ['OUT'] + '.tmp', os.environ['OUT']); time.sleep(600)" --id ${RGRID_WORKER_ID}
Restart=always
[Install]
WantedBy=multi-user.target
"""


def _user_data(out: Path) -> str:
    unit = base64.b64encode(WORKER_UNIT.encode()).decode()
    return WORKER_USER_DATA.format(out=out, unit=unit)


def test_parse_user_data_contract(tmp_path):
    argv, env = parse_user_data(_user_data(tmp_path / "env.json"))
    assert argv[0] == "/opt/rgrid/venv/bin/python3" and argv[1] == "-c" and argv[-2:] == ["--id", "w-7"]
    assert env["RGRID_GREETING"] == "hello there" and env["EXTRA"] == "from-unit"
    with pytest.raises(BootError):
        parse_user_data("#!/bin/sh\necho hi\n")
    with pytest.raises(BootError):
        parse_user_data("#cloud-config\nwrite_files: []\n")


def _standin_server(env: Env, server_id: int) -> dict:
    return next(s for s in env.http.get("/_standin/servers").json()["servers"] if s["id"] == server_id)


@pytest.mark.parametrize("standin", [{"real_booter": True}], indirect=True)
def test_real_booter_runs_the_worker_and_kills_it(standin, tmp_path):
    out = tmp_path / "env.json"
    made = standin.create("real-1", user_data=_user_data(out))
    made.action.wait_until_finished()
    assert _wait(out.exists, 10), (standin.state_dir / "logs" / f"server-{made.server.id}.log").read_text()
    seen = json.loads(out.read_text())
    assert seen["RGRID_WORKER_ID"] == "w-7" and seen["RGRID_GREETING"] == "hello there"
    assert seen["ARGV"] == ["--id", "w-7"] and seen["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert _wait(lambda: _standin_server(standin, made.server.id)["pgid"] is not None)
    pgid = _standin_server(standin, made.server.id)["pgid"]
    assert group_alive(pgid) and os.getpgid(pgid) == pgid != os.getpgid(0)
    assert json.loads((standin.state_dir / "state.json").read_text())["servers"][str(made.server.id)]["_"]["pgid"] == pgid

    standin.client.servers.power_off(made.server).wait_until_finished()
    assert _wait(lambda: not group_alive(pgid))
    out.unlink()
    standin.client.servers.power_on(made.server).wait_until_finished()
    assert standin.client.servers.get_by_id(made.server.id).status == "running"
    assert _wait(out.exists, 10)
    assert _wait(lambda: _standin_server(standin, made.server.id)["pgid"] not in (None, pgid))
    pgid = _standin_server(standin, made.server.id)["pgid"]

    standin.client.servers.delete(made.server).wait_until_finished()
    assert not group_alive(pgid)
    assert "[boot] server" in (standin.state_dir / "logs" / f"server-{made.server.id}.log").read_text()


def test_restart_keeps_servers_and_can_still_kill_their_groups(tmp_path):
    state = tmp_path / "state"
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    booter = lambda req: sleeper.pid  # noqa: E731 - a "worker" started elsewhere, recorded by pgid
    try:
        with serving(create_app(state, boot_delay=0.1, booter=booter)) as base:
            env = Env(base, None)
            made = env.create("survivor", labels={"keep": "yes"})
            made.action.wait_until_finished()
            assert _wait(lambda: _standin_server(env, made.server.id)["pgid"] == sleeper.pid)
        assert sleeper.poll() is None  # stopping the stand-in leaves its servers running
        with serving(create_app(state, boot_delay=0.1)) as base:
            env = Env(base, None)
            server = env.client.servers.get_by_name("survivor")
            assert (server.status, server.labels) == ("running", {"keep": "yes"})
            assert env.create("newcomer").server.id > made.server.id
            env.client.servers.delete(server).wait_until_finished()
            assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_command_line_serves_on_loopback_and_stops_on_sigterm(tmp_path):
    cmd = [sys.executable, "-m", "rgrid_service.localgrid.hetzner", "--port", "0", "--state-dir", str(tmp_path)]
    bad = subprocess.run(cmd + ["--host", "192.0.2.1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "loopback" in bad.stderr
    proc = subprocess.Popen(cmd + ["--boot-delay", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: (tmp_path / "endpoint.json").exists(), 20)
        url = json.loads((tmp_path / "endpoint.json").read_text())["url"]
        assert url.startswith("http://127.0.0.1:")
        assert _wait(lambda: _get_ok(url + "/locations"), 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, headers=AUTH, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_responses_never_leak_private_fields(tmp_path):
    app = create_app(tmp_path, boot_delay=0)
    with serving(app) as base:
        r = httpx.post(f"{base}/v1/servers", headers=AUTH, json={
            "name": "p", "server_type": "cx23", "image": "debian-12", "user_data": "#cloud-config\n"})
        assert r.status_code == 201 and "_" not in r.json()["server"]
        assert "user_data" not in json.dumps(r.json())

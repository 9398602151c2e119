"""stacks/worker_pool under pulumi.runtime.set_mocks: servers, labels, network, firewall, user_data."""
from __future__ import annotations

import pulumi
import pytest
from rgrid_core.constants import WORKER_LABEL
from rgrid_service.fleet.launch import render_cloud_init, worker_launch
from rgrid_service.settings import ServiceSettings
from stacks.worker_pool import PoolConfig, WorkerRecord, private_ip, worker_pool

pytestmark = pytest.mark.usefixtures("main_thread_loop")

SETTINGS = ServiceSettings(_env_file=None, database_url="postgresql://rgrid@10.0.0.2/rgrid", s3_endpoint="10.0.0.2:8333",
                           ray_address="10.0.0.2:6379", secret_key="k" * 32, worker_api_url="http://10.0.0.2:8000")
TOKEN = "t" * 64


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.created: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.created[args.name] = args
        ids = {"hcloud:index/network:Network": "11", "hcloud:index/firewall:Firewall": "22"}
        return ids.get(args.typ, f"{args.name}-id"), dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine protocol marks a secret value


def is_secret(value) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def plain(value):
    return value["value"] if is_secret(value) else value


def record(worker_id: str) -> WorkerRecord:
    return WorkerRecord(worker_id, "cx23", "fsn1", "debian-12",
                        render_cloud_init(worker_launch(worker_id, SETTINGS)))


def run_program(workers: list[WorkerRecord]) -> dict[str, pulumi.runtime.MockResourceArgs]:
    return run_program_with(PoolConfig(token=TOKEN, endpoint="http://127.0.0.1:1/v1"), workers)


def servers(created: dict) -> dict[str, pulumi.runtime.MockResourceArgs]:
    return {name: a for name, a in created.items() if a.typ == "hcloud:index/server:Server"}


def test_one_server_per_record_labelled_on_the_network_behind_the_firewall():
    created = run_program([record("w-1"), record("w-2"), record("w-3")])
    found = servers(created)
    assert sorted(found) == ["worker-w-1", "worker-w-2", "worker-w-3"]
    for name, args in found.items():
        worker_id = name[len("worker-"):]
        assert args.inputs["labels"] == {WORKER_LABEL: worker_id, "rgrid-role": "worker"}
        assert args.inputs["name"] == f"rgrid-{worker_id}"
        assert args.inputs["serverType"] == "cx23" and args.inputs["location"] == "fsn1"
        assert args.inputs["networks"] == [{"networkId": 11, "ip": private_ip(worker_id), "aliasIps": []}]
        assert args.inputs["firewallIds"] == [22]
        assert plain(args.inputs["userData"]) == render_cloud_init(worker_launch(worker_id, SETTINGS))
        assert f"RGRID_WORKER_ID={worker_id}\n" in plain(args.inputs["userData"])
    assert created["hcloud"].inputs["endpoint"] == "http://127.0.0.1:1/v1"
    firewall = next(a for a in created.values() if a.typ == "hcloud:index/firewall:Firewall")
    assert {r["protocol"] for r in firewall.inputs["rules"]} == {"tcp", "udp", "icmp"}
    assert all(r["direction"] == "in" and r["sourceIps"] == ["10.10.0.0/16"] for r in firewall.inputs["rules"])


def test_adding_a_worker_leaves_every_other_server_byte_identical():
    before = servers(run_program([record("w-1"), record("w-2")]))
    after = servers(run_program([record("w-1"), record("w-2"), record("w-3")]))
    assert set(after) - set(before) == {"worker-w-3"}
    for name in before:
        assert after[name].inputs == before[name].inputs


def test_no_shared_resource_is_made_when_the_control_plane_hands_in_network_and_firewall():
    created = run_program_with(PoolConfig(token=TOKEN, network_id=5, firewall_id=6), [record("w-1")])
    assert [a.typ for a in created.values() if a.typ != "pulumi:providers:hcloud"] == ["hcloud:index/server:Server"]
    server = servers(created)["worker-w-1"]
    assert server.inputs["networks"] == [{"networkId": 5, "ip": "10.10.1.2", "aliasIps": []}]
    assert server.inputs["firewallIds"] == [6]


def run_program_with(config: PoolConfig, workers: list[WorkerRecord]) -> dict:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="rgrid-worker-pool", stack="test", preview=False)

    @pulumi.runtime.test
    def check():
        worker_pool(workers, config)()
        return pulumi.Output.from_input(True)

    check()
    return mocks.created


def test_the_token_and_user_data_are_secrets():
    created = run_program([record("w-1")])
    assert is_secret(created["hcloud"].inputs["token"])
    assert plain(created["hcloud"].inputs["token"]) == TOKEN
    assert is_secret(created["worker-w-1"].inputs["userData"])


def test_private_addresses_follow_the_worker_id():
    assert [private_ip(w) for w in ("w-1", "w-250", "w-251", "w-31750")] == [
        "10.10.1.2", "10.10.1.251", "10.10.2.2", "10.10.127.251"]

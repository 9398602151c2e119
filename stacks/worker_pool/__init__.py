"""The `worker_pool` stack: one hcloud.Server per desired worker record.

The orchestrator runs it inline through the Automation API (rgrid_service.fleet.pulumi). Each
server carries its worker id as a label, sits on the private network behind the worker firewall,
and boots from user_data rendered for that worker alone, so adding or removing a worker leaves every
other server's inputs byte-identical (+1 worker previews as exactly 1 create). The network, its
subnet and the firewall are created here unless the control plane's stack hands in their ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud

from rgrid_core.constants import WORKER_LABEL

ROLE_LABEL = "rgrid-role"


@dataclass(frozen=True)
class PoolConfig:
    """What every server of the pool shares."""

    token: str  # the Hetzner API token (a Pulumi secret in the state)
    endpoint: str | None = None  # the Hetzner API; None: Hetzner's own
    network_id: int | None = None  # the control plane's private network; None: make one here
    firewall_id: int | None = None
    network_zone: str = "eu-central"
    ip_range: str = "10.10.0.0/16"
    subnet: str = "10.10.0.0/17"  # worker addresses: private_ip()
    # Who may reach a worker: only the private network (Ray, the agent's peers); nothing public.
    allowed_sources: tuple[str, ...] = ("10.10.0.0/16",)
    poll_interval: str = "500ms"


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str
    server_type: str
    location: str
    image: str
    user_data: str = field(repr=False)  # rendered by rgrid_service.fleet.launch for this worker alone


def worker_pool(workers: list[WorkerRecord], config: PoolConfig):
    """The Pulumi program for this desired set (a function for create_or_select_stack)."""

    def program() -> None:
        provider = hcloud.Provider("hcloud", token=pulumi.Output.secret(config.token), endpoint=config.endpoint,
                                   poll_interval=config.poll_interval, poll_function="constant")
        opts = pulumi.ResourceOptions(provider=provider)
        network_id, depends = _network(config, opts)
        firewall_id = _firewall(config, opts)
        servers = {}
        for w in workers:
            server = hcloud.Server(
                f"worker-{w.worker_id}",
                name=f"rgrid-{w.worker_id}",
                server_type=w.server_type,
                image=w.image,
                location=w.location,
                labels={WORKER_LABEL: w.worker_id, ROLE_LABEL: "worker"},
                user_data=pulumi.Output.secret(w.user_data),
                # Every field of the attachment given (the address from the worker id): a field left
                # to the provider shows as a change on every update.
                networks=[hcloud.ServerNetworkArgs(network_id=network_id, ip=private_ip(w.worker_id), alias_ips=[])],
                firewall_ids=[firewall_id],
                public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=False)],
                opts=pulumi.ResourceOptions(provider=provider, depends_on=depends),
            )
            servers[w.worker_id] = server.id
        pulumi.export("servers", servers)
        pulumi.export("network_id", network_id)

    return program


def private_ip(worker_id: str) -> str:
    """w-N's address in the workers' subnet, fixed by its id: 10.10.1.2 for w-1, …, 10.10.127.251."""
    n = int(worker_id.rsplit("-", 1)[-1]) - 1
    if not 0 <= n < 127 * 250:
        raise ValueError(f"worker id {worker_id!r} has no address in the subnet")
    return f"10.10.{n // 250 + 1}.{n % 250 + 2}"


def _network(config: PoolConfig, opts: pulumi.ResourceOptions):
    if config.network_id is not None:
        return config.network_id, []
    network = hcloud.Network("workers-network", ip_range=config.ip_range, labels={ROLE_LABEL: "workers"}, opts=opts)
    subnet = hcloud.NetworkSubnet("workers-subnet", network_id=network.id.apply(int), type="cloud",
                                  network_zone=config.network_zone, ip_range=config.subnet, opts=opts)
    return network.id.apply(int), [subnet]


def _firewall(config: PoolConfig, opts: pulumi.ResourceOptions):
    if config.firewall_id is not None:
        return config.firewall_id
    firewall = hcloud.Firewall("workers-firewall", rules=worker_firewall_rules(config.allowed_sources),
                               labels={ROLE_LABEL: "workers"}, opts=opts)
    return firewall.id.apply(int)


def worker_firewall_rules(sources) -> list[hcloud.FirewallRuleArgs]:
    """A worker takes traffic from the private network only (the control plane's stack makes the
    same firewall when it hands its id in)."""
    return [hcloud.FirewallRuleArgs(direction="in", protocol=proto, port="any" if proto != "icmp" else None,
                                    source_ips=list(sources), description=f"private {proto}")
            for proto in ("tcp", "udp", "icmp")]

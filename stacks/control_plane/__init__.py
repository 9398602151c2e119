"""The `control_plane` stack: everything RGrid runs on Hetzner except the workers.

`pulumi up` at the repository root runs this program (Pulumi.yaml's `main` is this folder). It
makes the private network and its subnet, the control-plane server on it (a fixed private
address), the server's firewall (the API port public; Ray, PostgreSQL and S3 only from the private
network), the workers' firewall, and a volume for the database and the objects, attached to the
server and mounted by its cloud-init, which installs and starts PostgreSQL, SeaweedFS, the Ray head,
the registry of the runtime images (built there from Debian's packages), the API and the
orchestrator. Workers get Docker and the registry's private address through the orchestrator's
settings (RGRID_DOCKER_HOST, RGRID_IMAGE_REGISTRY), which their cloud-init carries.

The orchestrator on that server runs the worker_pool stack; what that stack needs from this one
(network, firewall, head address, …) reaches it through the environment file cloud-init writes,
and the same values are this stack's outputs: ORCHESTRATOR_SETTINGS maps one onto the other.
Every secret (the Hetzner token, the database password, the S3 keys,
the first API key, the control plane's secret key, the Ray cluster's token) comes from `--secret`
config and stays a secret Output; the server's user_data, which holds them, is one too. Workers
get none of them but the Ray token (their Ray node joins with it): their user_data is the
orchestrator's, and a worker holds its own worker token for the worker API (no database role, no
store keys). The secret key (worker tokens, sealed env values: rgrid_service.secrets) goes into a
file of its own that only the API's and the orchestrator's units read.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud

from stacks.worker_pool import ROLE_LABEL, PoolConfig, worker_firewall_rules

from .cloud_init import RAY_TOKEN, ControlPlaneInit, check_secret, render

POOL = PoolConfig(token="")  # the worker_pool stack's addressing: this stack makes what it expects
PRIVATE_IP = "10.10.0.2"  # the control plane's address; workers start at 10.10.1.2 (private_ip())
STATE_DIR = "/srv/rgrid"  # the volume's mount point
# Hetzner's locations in the network zone of the worker_pool stack's network (eu-central).
NETWORK_ZONE_LOCATIONS = ("fsn1", "nbg1", "hel1")
# Every IPv4 and IPv6 source, as Hetzner firewall rules write "from anywhere".
ANYWHERE = ("0.0.0.0/0", "::/0")
API_INTERNAL_PORT = 8001  # uvicorn on loopback; nginx serves the public api_port
FIRST_TENANT = "operator"
GO_VERSION = "1.26.8"  # for building the Pulumi engine on the server (tools/pulumi/*/go.mod need ≥ 1.26.6)

# Stack output -> the orchestrator's setting holding the same value (written into its environment
# file by cloud-init). The worker_pool stack reads these through the orchestrator's settings.
ORCHESTRATOR_SETTINGS = {
    "network_id": "RGRID_HCLOUD_NETWORK_ID",
    "worker_firewall_id": "RGRID_HCLOUD_FIREWALL_ID",
    "head_address": "RGRID_RAY_ADDRESS",
    "s3_endpoint": "RGRID_S3_ENDPOINT",
    "worker_server_type": "RGRID_SERVER_TYPE",
    "location": "RGRID_SERVER_LOCATION",
    "worker_image": "RGRID_SERVER_IMAGE",
    "max_workers": "RGRID_MAX_WORKERS",
    "image_registry": "RGRID_IMAGE_REGISTRY",
}
# The engine on a worker server (Debian's docker.io, started by its cloud-init) that runs scripts.
WORKER_DOCKER_HOST = "unix:///run/docker.sock"


@dataclass(frozen=True)
class Secrets:
    """Each one a secret Output (from `pulumi config set --secret`)."""

    hcloud_token: pulumi.Output
    database_password: pulumi.Output
    s3_access_key: pulumi.Output
    s3_secret_key: pulumi.Output
    api_key: pulumi.Output
    secret_key: pulumi.Output  # RGRID_SECRET_KEY: the API's and the orchestrator's only
    ray_token: pulumi.Output  # Ray's token authentication: the head, the orchestrator and every worker node


@dataclass(frozen=True)
class ControlPlaneConfig:
    secrets: Secrets = field(repr=False)
    repository: str  # the git URL cloud-init installs RGrid from
    ref: str = "main"
    name: str = "rgrid"
    server_type: str = "cx33"
    location: str = "fsn1"
    image: str = "debian-12"
    volume_gb: int = 20
    api_port: int = 8000
    api_workers: int = 2  # API processes (RGRID_API_WORKERS); each has its own database pool
    s3_port: int = 8333
    ray_port: int = 6379
    registry_port: int = 5000  # the runtime images' registry, on the private address only
    worker_server_type: str = "cx23"
    worker_image: str = "debian-12"
    max_workers: int = 10
    ssh_keys: tuple[str, ...] = ()  # names of SSH keys already in the Hetzner project
    admin_sources: tuple[str, ...] = ()  # who may reach SSH (22); nobody by default
    endpoint: str | None = None  # the Hetzner API; None: Hetzner's own
    poll_interval: str = "500ms"

    def __post_init__(self) -> None:
        if self.location not in NETWORK_ZONE_LOCATIONS:
            raise ValueError(f"The location {self.location!r} is outside the private network's zone "
                             f"({POOL.network_zone}): pick one of {', '.join(NETWORK_ZONE_LOCATIONS)} with "
                             "`pulumi config set location …`.")

    @classmethod
    def from_pulumi_config(cls) -> "ControlPlaneConfig":
        cfg, hc = pulumi.Config(), pulumi.Config("hcloud")
        repository = cfg.get("repository")
        if not repository:
            raise ValueError("Set the git URL the server installs RGrid from: "
                             "`pulumi config set repository URL` (scripts/control-plane-init.sh does).")
        secrets = Secrets(
            hcloud_token=hc.require_secret("token"),
            database_password=cfg.require_secret("databasePassword"),
            s3_access_key=cfg.require_secret("s3AccessKey"),
            s3_secret_key=cfg.require_secret("s3SecretKey"),
            api_key=cfg.require_secret("apiKey"),
            secret_key=cfg.require_secret("secretKey"),
            ray_token=cfg.require_secret("rayToken"),
        )
        d = cls.__dataclass_fields__
        return cls(
            secrets=secrets, repository=repository, ref=cfg.get("ref") or d["ref"].default,
            name=cfg.get("name") or d["name"].default,
            server_type=cfg.get("serverType") or d["server_type"].default,
            location=cfg.get("location") or d["location"].default,
            image=cfg.get("image") or d["image"].default,
            volume_gb=cfg.get_int("volumeSize") or d["volume_gb"].default,
            api_port=cfg.get_int("apiPort") or d["api_port"].default,
            api_workers=cfg.get_int("apiWorkers") or d["api_workers"].default,
            registry_port=cfg.get_int("registryPort") or d["registry_port"].default,
            worker_server_type=cfg.get("workerServerType") or d["worker_server_type"].default,
            worker_image=cfg.get("workerImage") or d["worker_image"].default,
            max_workers=d["max_workers"].default if cfg.get_int("maxWorkers") is None else cfg.get_int("maxWorkers"),
            ssh_keys=tuple(cfg.get_object("sshKeys") or ()),
            admin_sources=tuple(cfg.get_object("adminSources") or ()),
            endpoint=hc.get("endpoint"),
            poll_interval=hc.get("pollInterval") or d["poll_interval"].default,
        )


def control_plane_firewall_rules(config: ControlPlaneConfig) -> list[hcloud.FirewallRuleArgs]:
    """The API port from anywhere (nginx there also carries presigned transfers to the store's
    bucket); everything else (Ray, PostgreSQL, the store's own port) from the private range only.
    (Hetzner's firewalls filter the public interface: a port with no public rule is unreachable
    from outside; the services also bind the private address only.)"""
    anywhere = list(ANYWHERE)
    private = list(POOL.allowed_sources)
    rules = [hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port=str(config.api_port), source_ips=anywhere,
                                     description="RGrid API (public)")]
    rules += [hcloud.FirewallRuleArgs(direction="in", protocol=proto, port="any" if proto != "icmp" else None,
                                      source_ips=private, description=f"private network {proto} (Ray, PostgreSQL, S3, images)")
              for proto in ("tcp", "udp", "icmp")]
    if config.admin_sources:
        rules.append(hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port="22",
                                             source_ips=list(config.admin_sources), description="SSH (admins)"))
    return rules


def orchestrator_env(config: ControlPlaneConfig, network_id: int, worker_firewall_id: int, token: str,
                     database_password: str, s3_access_key: str,
                     s3_secret_key: str) -> dict[str, str]:
    """The services' environment file (plain values in, so it can be rendered inside one apply)."""
    outputs = plain_outputs(config, network_id, worker_firewall_id)
    env = {setting: str(outputs[name]) for name, setting in ORCHESTRATOR_SETTINGS.items()}
    db = f"{PRIVATE_IP}:5432/rgrid"
    env.update({
        "RGRID_PRIVATE_IP": PRIVATE_IP,
        "RGRID_API_PORT": str(config.api_port),  # nginx: the bucket's paths to the store, the rest to the API
        "RGRID_API_INTERNAL_PORT": str(API_INTERNAL_PORT),
        "RGRID_API_WORKERS": str(config.api_workers),
        "RGRID_S3_BUCKET": "rgrid",
        "RGRID_S3_PORT": str(config.s3_port),
        "RGRID_RAY_PORT": str(config.ray_port),
        "RGRID_DATABASE_URL": f"postgresql://rgrid:{database_password}@{db}",
        "RGRID_S3_ACCESS_KEY": s3_access_key,
        "RGRID_S3_SECRET_KEY": s3_secret_key,
        "RGRID_RAY_DASHBOARD_URL": f"http://{PRIVATE_IP}:8265",
        # The head runs the dashboard (the operators' view on the private network), so the workers'
        # Ray nodes run full dashboard agents for it.
        "RGRID_RAY_DASHBOARD": "true",
        # Workers reach the API through nginx on the private address, and the store directly.
        "RGRID_WORKER_API_URL": f"http://{PRIVATE_IP}:{config.api_port}",
        "RGRID_S3_WORKER_ENDPOINT": f"{PRIVATE_IP}:{config.s3_port}",
        "RGRID_RAY_TOKEN_FILE": RAY_TOKEN,
        # Every worker runs scripts in Docker, pulling the runtime images from the control plane.
        "RGRID_DOCKER_HOST": WORKER_DOCKER_HOST,
        "RGRID_FLEET": "pulumi",
        "RGRID_WORKER_PACKAGE": f"rgrid[service] @ git+{config.repository}@{config.ref}",
        "RGRID_HCLOUD_TOKEN": token,
        "RGRID_PULUMI_STATE_DIR": f"{STATE_DIR}/pulumi",
    })
    if config.endpoint:
        env["RGRID_HCLOUD_ENDPOINT"] = config.endpoint
    return env


def plain_outputs(config: ControlPlaneConfig, network_id: int, worker_firewall_id: int) -> dict:
    """The stack outputs that are no secret, from resolved ids."""
    return {
        "network_id": network_id,
        "worker_firewall_id": worker_firewall_id,
        "network_zone": POOL.network_zone,
        "ip_range": POOL.ip_range,
        "subnet": POOL.subnet,
        "private_ip": PRIVATE_IP,
        "head_address": f"{PRIVATE_IP}:{config.ray_port}",
        "s3_endpoint": f"{PRIVATE_IP}:{config.s3_port}",
        "image_registry": f"{PRIVATE_IP}:{config.registry_port}",
        "database_host": f"{PRIVATE_IP}:5432",
        "worker_server_type": config.worker_server_type,
        "location": config.location,
        "worker_image": config.worker_image,
        "max_workers": config.max_workers,
    }


def user_data(config: ControlPlaneConfig, volume_device, network_id, worker_firewall_id) -> pulumi.Output:
    """The server's cloud-init, a secret Output (it holds every secret of the control plane)."""
    s = config.secrets

    def build(args) -> str:
        device, net, fw, token, db_pw, s3_key, s3_secret, api_key, secret_key, ray_token = args
        for name, value in (("hcloud:token", token), ("databasePassword", db_pw),
                            ("s3AccessKey", s3_key), ("s3SecretKey", s3_secret), ("apiKey", api_key),
                            ("secretKey", secret_key), ("rayToken", ray_token)):
            check_secret(name, value)
        return render(ControlPlaneInit(
            service_env=orchestrator_env(config, net, fw, token, db_pw, s3_key, s3_secret),
            setup_env={
                "RGRID_VOLUME_DEVICE": device,
                "RGRID_DB_PASSWORD": db_pw,
                "RGRID_API_KEY_SHA256": hashlib.sha256(api_key.encode()).hexdigest(),
                "RGRID_FIRST_TENANT": FIRST_TENANT,
                "RGRID_REPOSITORY": config.repository,
                "RGRID_REF": config.ref,
                "RGRID_GO_VERSION": GO_VERSION,
            },
            secret_env={"RGRID_SECRET_KEY": secret_key},
            s3_access_key=s3_key, s3_secret_key=s3_secret, ray_token=ray_token))

    return pulumi.Output.secret(pulumi.Output.all(
        volume_device, network_id, worker_firewall_id, s.hcloud_token, s.database_password,
        s.s3_access_key, s.s3_secret_key, s.api_key, s.secret_key,
        s.ray_token).apply(build))


def control_plane(config: ControlPlaneConfig) -> None:
    """The program: call it inside a Pulumi run (the CLI's, or set_mocks in tests)."""
    provider = hcloud.Provider("hcloud", token=pulumi.Output.secret(config.secrets.hcloud_token),
                               endpoint=config.endpoint, poll_interval=config.poll_interval,
                               poll_function="constant")
    opts = pulumi.ResourceOptions(provider=provider)
    labels = {ROLE_LABEL: "control-plane"}

    network = hcloud.Network("network", name=f"{config.name}-network", ip_range=POOL.ip_range,
                             labels=labels, opts=opts)
    network_id = network.id.apply(int)
    subnet = hcloud.NetworkSubnet("subnet", network_id=network_id, type="cloud", network_zone=POOL.network_zone,
                                  ip_range=POOL.subnet, opts=opts)
    firewall = hcloud.Firewall("control-plane-firewall", name=f"{config.name}-control-plane",
                               rules=control_plane_firewall_rules(config), labels=labels, opts=opts)
    workers_firewall = hcloud.Firewall("workers-firewall", name=f"{config.name}-workers",
                                       rules=worker_firewall_rules(POOL.allowed_sources),
                                       labels={ROLE_LABEL: "workers"}, opts=opts)
    worker_firewall_id = workers_firewall.id.apply(int)
    volume = hcloud.Volume("data", name=f"{config.name}-data", size=config.volume_gb, location=config.location,
                           format="ext4", labels=labels, opts=opts)
    server = hcloud.Server(
        "control-plane",
        name=f"{config.name}-control-plane",
        server_type=config.server_type,
        image=config.image,
        location=config.location,
        labels=labels,
        ssh_keys=list(config.ssh_keys),
        user_data=user_data(config, volume.linux_device, network_id, worker_firewall_id),
        networks=[hcloud.ServerNetworkArgs(network_id=network_id, ip=PRIVATE_IP, alias_ips=[])],
        firewall_ids=[firewall.id.apply(int)],
        public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[subnet]),
    )
    attachment = hcloud.VolumeAttachment("data-attachment", volume_id=volume.id.apply(int),
                                         server_id=server.id.apply(int), automount=False, opts=opts)

    plain = pulumi.Output.all(network_id, worker_firewall_id).apply(lambda a: plain_outputs(config, a[0], a[1]))
    for name in plain_outputs(config, 0, 0):
        pulumi.export(name, plain.apply(lambda p, n=name: p[n]))
    pulumi.export("orchestrator_settings", ORCHESTRATOR_SETTINGS)
    pulumi.export("api_url", pulumi.Output.concat("http://", server.ipv4_address, ":", str(config.api_port)))
    pulumi.export("api_key", pulumi.Output.secret(config.secrets.api_key))
    pulumi.export("public_ipv4", server.ipv4_address)
    pulumi.export("server_id", server.id)
    pulumi.export("firewall_id", firewall.id.apply(int))
    pulumi.export("volume_id", volume.id.apply(int))
    pulumi.export("volume_device", volume.linux_device)
    pulumi.export("volume_attached_to", attachment.server_id)


def main() -> None:
    control_plane(ControlPlaneConfig.from_pulumi_config())

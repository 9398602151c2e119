"""stacks/control_plane under pulumi.runtime.set_mocks: resources, firewall rules, the volume and its
attachment, the outputs the worker_pool stack reads, and secrets that stay secret."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pulumi
import yaml
import pytest

from stacks.control_plane import (ANYWHERE, ORCHESTRATOR_SETTINGS, POOL, PRIVATE_IP, ControlPlaneConfig, Secrets,
                                  control_plane)
from stacks.control_plane.cloud_init import SECRET_ENV, SERVICE_ENV, SETUP_ENV, files_of
from tests.conftest import missing

pytestmark = pytest.mark.usefixtures("main_thread_loop")

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine protocol marks a secret value


def is_secret(value) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def plain(value):
    return value["value"] if is_secret(value) else value


SECRETS = {"token": "h" * 64, "db": "dbpass-0123456789abcdef", "s3_key": "s3key-0123456789abcdef",
           "s3_secret": "s3secret-0123456789abcdef",
           "api_key": "rg_apikey-0123456789abcdef", "secret_key": "secretkey-0123456789abcdef0123456789",
           "ray": "raytoken-0123456789abcdef"}
IDS = {"hcloud:index/network:Network": "11", "hcloud:index/firewall:Firewall": None,
       "hcloud:index/volume:Volume": "33", "hcloud:index/server:Server": "44"}


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.created: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.created[args.name] = args
        state = dict(args.inputs)
        if args.typ == "hcloud:index/firewall:Firewall":
            return ("21" if args.name == "control-plane-firewall" else "22"), state
        if args.typ == "hcloud:index/volume:Volume":
            state["linuxDevice"] = "/dev/disk/by-id/scsi-0HC_Volume_33"
        if args.typ == "hcloud:index/server:Server":
            state["ipv4Address"] = "203.0.113.7"
        return IDS.get(args.typ) or f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def config(**overrides) -> ControlPlaneConfig:
    secrets = Secrets(*(pulumi.Output.secret(SECRETS[k]) for k in ("token", "db", "s3_key", "s3_secret",
                                                                    "api_key", "secret_key", "ray")))
    return ControlPlaneConfig(secrets=secrets, repository="https://git.example.org/rgrid.git", **overrides)


def run(cfg: ControlPlaneConfig) -> tuple[dict, dict]:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="rgrid", stack="test", preview=False)
    outputs: dict = {}

    @pulumi.runtime.test
    def check():
        control_plane(cfg)
        return pulumi.Output.from_input(True)

    exported = {}
    real_export = pulumi.export

    def capture(name, value):
        exported[name] = value
        real_export(name, value)

    pulumi.export = capture
    try:
        check()
        # Resolve every exported Output inside the mock run, remembering whether it is secret.
        @pulumi.runtime.test
        def resolve():
            def keep(name, value):
                out = pulumi.Output.from_input(value)
                return pulumi.Output.all(out, out.is_secret()).apply(
                    lambda v: outputs.__setitem__(name, (v[0], v[1])))
            return pulumi.Output.all(*[keep(n, v) for n, v in exported.items()])
        resolve()
    finally:
        pulumi.export = real_export
    return mocks.created, outputs


def by_type(created: dict, typ: str) -> dict:
    return {n: a for n, a in created.items() if a.typ == f"hcloud:index/{typ}"}


def test_resources_network_subnet_server_firewalls_volume_attached():
    created, _ = run(config())
    assert set(by_type(created, "network:Network")) == {"network"}
    assert created["network"].inputs["ipRange"] == POOL.ip_range == "10.10.0.0/16"
    subnet = created["subnet"].inputs
    assert (subnet["networkId"], subnet["ipRange"], subnet["networkZone"], subnet["type"]) == (11, POOL.subnet, "eu-central", "cloud")
    server = created["control-plane"].inputs
    assert (server["serverType"], server["location"], server["image"]) == ("cx33", "fsn1", "debian-12")
    assert server["networks"] == [{"networkId": 11, "ip": PRIVATE_IP, "aliasIps": []}]
    assert server["firewallIds"] == [21]
    volume = created["data"].inputs
    assert (volume["location"], volume["format"], volume["size"]) == ("fsn1", "ext4", 20)
    attachment = created["data-attachment"].inputs
    assert (attachment["volumeId"], attachment["serverId"], attachment["automount"]) == (33, 44, False)


def test_type_and_location_are_config():
    created, outputs = run(config(server_type="cx43", location="nbg1"))
    server = created["control-plane"].inputs
    assert (server["serverType"], server["location"]) == ("cx43", "nbg1")
    assert created["data"].inputs["location"] == "nbg1"
    assert outputs["location"][0] == "nbg1"


def test_firewall_api_public_everything_else_only_from_the_private_range():
    created, _ = run(config())
    rules = created["control-plane-firewall"].inputs["rules"]
    public = [r for r in rules if set(r["sourceIps"]) & set(ANYWHERE)]
    assert public == [{"direction": "in", "protocol": "tcp", "port": "8000", "sourceIps": list(ANYWHERE),
                       "description": "RGrid API (public)"}]
    private = [r for r in rules if r not in public]
    assert {r["protocol"] for r in private} == {"tcp", "udp", "icmp"}
    assert all(r["sourceIps"] == ["10.10.0.0/16"] for r in private)  # Ray 6379, PostgreSQL 5432, S3 8333 among them
    assert all(r["direction"] == "in" for r in rules)
    # No SSH unless asked for, and then only from the sources given.
    assert not any(r.get("port") == "22" for r in rules)
    rules = run(config(admin_sources=("198.51.100.0/24",)))[0]["control-plane-firewall"].inputs["rules"]
    assert [r["sourceIps"] for r in rules if r.get("port") == "22"] == [["198.51.100.0/24"]]
    workers = created["workers-firewall"].inputs["rules"]
    assert all(r["sourceIps"] == ["10.10.0.0/16"] for r in workers)


def test_outputs_are_what_the_worker_pool_stack_needs():
    _, outputs = run(config())
    values = {k: v for k, (v, _) in outputs.items()}
    assert values["network_id"] == 11 and values["worker_firewall_id"] == 22
    assert (values["subnet"], values["ip_range"], values["network_zone"]) == (POOL.subnet, POOL.ip_range, POOL.network_zone)
    assert values["head_address"] == f"{PRIVATE_IP}:6379"
    assert values["api_url"] == "http://203.0.113.7:8000"
    assert values["volume_attached_to"] == 44 and values["volume_device"].endswith("_33")
    assert values["orchestrator_settings"] == ORCHESTRATOR_SETTINGS
    # Every mapped output reaches the orchestrator's environment file with the same value.
    created, _ = run(config())
    env = _env(files_of(plain(created["control-plane"].inputs["userData"]))[SERVICE_ENV])
    for output, setting in ORCHESTRATOR_SETTINGS.items():
        assert env[setting] == str(values[output]), output
    assert env["RGRID_FLEET"] == "pulumi" and env["RGRID_HCLOUD_TOKEN"] == SECRETS["token"]
    # Workers install the code the control plane runs, from the same repository and ref.
    from rgrid_service.settings import ServiceSettings
    package = ServiceSettings(_env_file=None, worker_package=env["RGRID_WORKER_PACKAGE"]).worker_package
    assert package.startswith("rgrid[service] @ git+") and package.endswith("@main")


def test_transfers_share_the_public_port_with_the_api():
    """Clients upload and download through presigned URLs: nginx on the public port sends the
    bucket's paths to the store (Host unchanged, so signatures hold) and the rest to the API on
    loopback; the store's own port has no public rule."""
    created, _ = run(config())
    files = files_of(plain(created["control-plane"].inputs["userData"]))
    env = _env(files[SERVICE_ENV])
    api_unit = files["/etc/systemd/system/rgrid-api.service"]
    assert "--host 127.0.0.1 --port ${RGRID_API_INTERNAL_PORT}" in api_unit and env["RGRID_API_INTERNAL_PORT"] == "8001"
    # Several API processes (python -m rgrid_service.api reads RGRID_API_WORKERS).
    assert "python -m rgrid_service.api " in api_unit and env["RGRID_API_WORKERS"] == "2"
    setup = files["/usr/local/sbin/rgrid-control-plane-setup"]
    assert "location /$RGRID_S3_BUCKET/" in setup and "proxy_pass http://$RGRID_PRIVATE_IP:$RGRID_S3_PORT;" in setup
    assert "proxy_set_header Host \\$http_host;" in setup
    assert 'RGRID_S3_PUBLIC_ENDPOINT=$PUBLIC_IP:$RGRID_API_PORT' in setup
    assert env["RGRID_S3_BUCKET"] == "rgrid" and env["RGRID_API_PORT"] == "8000"
    public = [r for r in created["control-plane-firewall"].inputs["rules"] if set(r["sourceIps"]) & set(ANYWHERE)]
    assert [r["port"] for r in public] == ["8000"]


def test_secrets_are_secret_outputs_and_user_data_is_secret():
    created, outputs = run(config())
    assert is_secret(created["hcloud"].inputs["token"])
    user_data = created["control-plane"].inputs["userData"]
    assert is_secret(user_data)
    assert outputs["api_key"] == (SECRETS["api_key"], True)
    for name, (value, secret) in outputs.items():
        if not secret:
            assert not any(s in str(value) for s in SECRETS.values()), name
    files = files_of(plain(user_data))
    setup = _env(files[SETUP_ENV])
    assert setup["RGRID_API_KEY_SHA256"] == hashlib.sha256(SECRETS["api_key"].encode()).hexdigest()
    assert SECRETS["api_key"] not in plain(user_data)  # the server holds only the key's hash
    env = _env(files[SERVICE_ENV])
    # No database URL for workers: they reach the worker API with their own token.
    assert not any("WORKER_DATABASE" in k or "rgrid_worker" in v for k, v in env.items())


def test_ray_runs_with_token_authentication():
    """The head and the orchestrator run in Ray's token mode with the token file cloud-init writes
    (owned by the services' user). (A worker gets the token in its launch environment: see
    test_the_orchestrator_configured_by_cloud_init_runs_workers_on_this_network_without_its_secrets.)"""
    from stacks.control_plane.cloud_init import RAY_TOKEN

    created, _ = run(config())
    files = files_of(plain(created["control-plane"].inputs["userData"]))
    assert files[RAY_TOKEN] == SECRETS["ray"]
    assert _env(files[SERVICE_ENV])["RGRID_RAY_TOKEN_FILE"] == RAY_TOKEN
    for unit in ("rgrid-ray-head", "rgrid-orchestrator"):
        text = files[f"/etc/systemd/system/{unit}.service"]
        assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={RAY_TOKEN}" in text, unit
    assert f"chown rgrid:rgrid {RAY_TOKEN}" in files["/usr/local/sbin/rgrid-control-plane-setup"]


def test_a_weak_secret_is_refused_with_a_sentence():
    # The program checks every secret this way before rendering user_data (an apply, so a weak one
    # fails the update with this sentence).
    from stacks.control_plane.cloud_init import check_secret

    assert check_secret("apiKey", SECRETS["api_key"]) == SECRETS["api_key"]
    for weak in ("short", "has a space in it, 0123456789", "quote'0123456789abcdef", ""):
        with pytest.raises(ValueError, match="databasePassword must be at least 16 characters"):
            check_secret("databasePassword", weak)
    with pytest.raises(ValueError, match="secretKey must be at least 32 characters"):
        check_secret("secretKey", "a" * 31)
    assert check_secret("secretKey", "a" * 32) == "a" * 32


def test_rendered_control_plane_cloud_init_passes_cloud_init_schema(tmp_path):
    if not shutil.which("cloud-init"):
        missing("cloud-init", "install it with `apt-get install cloud-init` (scripts/setup.sh --with-tests does).")
    created, _ = run(config())
    path = tmp_path / "user-data"
    path.write_text(plain(created["control-plane"].inputs["userData"]))
    assert len(path.read_bytes()) <= 32 * 1024  # Hetzner's user_data limit
    done = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Valid cloud-config")
    # The set-up script it runs is valid bash, and runcmd runs exactly it.
    script = tmp_path / "setup.sh"
    script.write_text(files_of(path.read_text())["/usr/local/sbin/rgrid-control-plane-setup"])
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def _env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line)
    return {k: v[1:-1] if v.startswith('"') else v for k, v in pairs}


def test_the_readme_states_the_monthly_cost_of_the_defaults():
    from pathlib import Path

    from rgrid_service.fleet.prices import DEFAULT_PRICES

    d = ControlPlaneConfig.__dataclass_fields__
    server, volume = d["server_type"].default, d["volume_gb"].default
    total = (DEFAULT_PRICES.get(server).monthly_eur + volume * DEFAULT_PRICES.get("volume-gb").monthly_eur
             + DEFAULT_PRICES.get("primary-ipv4").monthly_eur)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"**{total:.2f} € per month**" in readme
    assert f"{DEFAULT_PRICES.get(server).as_of}" in readme and f"{DEFAULT_PRICES.get('volume-gb').as_of}" in readme
    worker = d["worker_server_type"].default
    assert f"a {worker} worker (2 slots) costs {DEFAULT_PRICES.get(worker).hourly_eur} € per" in readme


def test_the_orchestrator_configured_by_cloud_init_runs_workers_on_this_network_without_its_secrets(tmp_path):
    """The services' environment file, read as the orchestrator reads it, makes the worker_pool
    stack put workers on this stack's network behind its workers' firewall, and gives a worker
    neither the Hetzner token, the API key nor the control plane's database password."""
    from rgrid_service.fleet import ServerSpec
    from rgrid_service.fleet.engine import Engine
    from rgrid_service.fleet.pulumi import PulumiFleet
    from rgrid_service.settings import ServiceSettings

    created, _ = run(config())
    files = files_of(plain(created["control-plane"].inputs["userData"]))
    env = {**_env(files[SERVICE_ENV]), **_env(files[SECRET_ENV])}  # as the orchestrator's unit reads them
    (tmp_path / "ray-token").write_text(files[env["RGRID_RAY_TOKEN_FILE"]])  # where cloud-init writes it
    env["RGRID_RAY_TOKEN_FILE"] = str(tmp_path / "ray-token")
    settings = ServiceSettings(_env_file=None, **{k[len("RGRID_"):].lower(): v for k, v in env.items()})
    assert (settings.fleet, settings.hcloud_network_id, settings.hcloud_firewall_id) == ("pulumi", 11, 22)
    fleet = PulumiFleet(settings, Engine(tmp_path, tmp_path), settings.hcloud_token, settings.hcloud_endpoint)
    spec = ServerSpec("w-1", settings.server_type, settings.server_location, settings.server_image)

    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="rgrid-worker-pool", stack="test", preview=False)

    @pulumi.runtime.test
    def check():
        fleet._program([spec])()
        return pulumi.Output.from_input(True)

    check()
    assert [a.typ for a in mocks.created.values() if a.typ != "pulumi:providers:hcloud"] == [
        "hcloud:index/server:Server"]  # no network, subnet or firewall of its own
    worker = mocks.created["worker-w-1"].inputs
    assert worker["networks"][0]["networkId"] == 11 and worker["firewallIds"] == [22]
    assert (worker["serverType"], worker["location"]) == ("cx23", "fsn1")
    worker_data = plain(worker["userData"])
    assert "DATABASE_URL" not in worker_data and "S3_ACCESS_KEY" not in worker_data
    assert "S3_SECRET_KEY" not in worker_data and "postgresql://" not in worker_data
    assert f"RGRID_RAY_ADDRESS={PRIVATE_IP}:6379" in worker_data
    installs = [cmd for cmd in yaml.safe_load(worker_data)["runcmd"] if "install" in cmd]
    assert installs[0][-1] == settings.worker_package  # the control plane's own repository and ref
    for name in ("token", "db", "api_key", "secret_key", "s3_key", "s3_secret"):
        assert SECRETS[name] not in worker_data, name
    # Its own worker token instead, and where the API is: nginx on the private address.
    from rgrid_service.secrets import keys_for

    launch = _env(files_of(worker_data)["/etc/rgrid/worker.env"])
    assert keys_for(settings).token_worker(launch["RGRID_WORKER_TOKEN"]) == "w-1"
    assert launch["RGRID_API_URL"] == f"http://{PRIVATE_IP}:8000"
    assert launch["RGRID_RAY_AUTH_TOKEN"] == SECRETS["ray"]  # to join the Ray cluster
    # Docker runs its scripts: the engine is installed and started before the worker, which pulls
    # every runtime image from the control plane's registry before its first heartbeat.
    assert launch["RGRID_DOCKER_HOST"] == "unix:///run/docker.sock"
    assert launch["RGRID_IMAGE_REGISTRY"] == f"{PRIVATE_IP}:5000"
    worker_doc = yaml.safe_load(worker_data)
    assert "docker.io" in worker_doc["packages"]
    import json

    assert json.loads(files_of(worker_data)["/etc/docker/daemon.json"])["insecure-registries"] == [f"{PRIVATE_IP}:5000"]
    assert ["systemctl", "enable", "--now", "docker.service"] in worker_doc["runcmd"]


def test_the_secret_key_is_read_by_the_api_and_the_orchestrator_only():
    created, _ = run(config())
    files = files_of(plain(created["control-plane"].inputs["userData"]))
    assert _env(files[SECRET_ENV]) == {"RGRID_SECRET_KEY": SECRETS["secret_key"]}
    assert not any(SECRETS["secret_key"] in text for path, text in files.items() if path != SECRET_ENV)
    readers = sorted(path for path, text in files.items() if SECRET_ENV in text)
    assert readers == ["/etc/systemd/system/rgrid-api.service", "/etc/systemd/system/rgrid-orchestrator.service"]
    env = _env(files[SERVICE_ENV])
    assert env["RGRID_WORKER_API_URL"] == f"http://{PRIVATE_IP}:8000"
    assert env["RGRID_S3_WORKER_ENDPOINT"] == f"{PRIVATE_IP}:8333"


def test_a_location_outside_the_network_zone_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="outside the private network's zone"):
        config(location="ash")


def test_the_control_plane_builds_the_runtime_images_and_serves_them_on_the_private_address_only(tmp_path):
    """Its cloud-init installs what builds the images (mmdebstrap, docker.io) and serves them
    (docker-registry), builds them into the volume before the orchestrator can ask for a worker, and
    serves that storage on the private address (the packaged registry, which would listen on every
    address, stays off); no public rule opens the registry's port."""
    created, outputs = run(config())
    user_data = plain(created["control-plane"].inputs["userData"])
    assert {"docker.io", "docker-registry", "mmdebstrap"} <= set(yaml.safe_load(user_data)["packages"])
    files = files_of(user_data)
    env = _env(files[SERVICE_ENV])
    assert env["RGRID_IMAGE_REGISTRY"] == f"{PRIVATE_IP}:5000" == outputs["image_registry"][0]
    setup = files["/usr/local/sbin/rgrid-control-plane-setup"]
    build = setup.index('python -m rgrid_service.images --storage "$DATA/registry"')
    serve = setup.index("systemctl enable --now rgrid-registry.service")
    assert build < serve < setup.index("systemctl enable --now rgrid-api.service rgrid-orchestrator.service")
    assert "systemctl disable --now docker-registry.service" in setup[:build]
    unit = files["/etc/systemd/system/rgrid-registry.service"]
    assert "ExecStart=/usr/bin/docker-registry serve /etc/rgrid/registry.yml" in unit
    assert "RequiresMountsFor=/srv/rgrid" in unit and "User=docker-registry" in unit
    # The registry's configuration, as the set-up script writes it.
    lines = setup.splitlines()
    start = lines.index("cat >/etc/rgrid/registry.yml <<YML")
    heredoc = "\n".join(lines[start:lines.index("YML", start) + 1]).replace("/etc/rgrid/registry.yml",
                                                                            str(tmp_path / "registry.yml"))
    subprocess.run(["bash", "-c", heredoc], check=True, env={"DATA": "/srv/rgrid", **env})
    registry = yaml.safe_load((tmp_path / "registry.yml").read_text())
    assert registry["http"]["addr"] == f"{PRIVATE_IP}:5000"
    assert registry["storage"]["filesystem"]["rootdirectory"] == "/srv/rgrid/registry"
    public = [r for r in created["control-plane-firewall"].inputs["rules"] if set(r["sourceIps"]) & set(ANYWHERE)]
    assert "5000" not in [r["port"] for r in public]

"""Control-plane and runner configuration, read from RGRID_* environment variables.

Every timing knob lives here so tests can run the real loops in seconds.
"""
from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from rgrid_core.workerknobs import WorkerKnobs


class ServiceSettings(WorkerKnobs):
    """The control plane's settings; the worker's knobs (WorkerKnobs) are among them, so the
    values a worker is launched with are these fields."""

    model_config = SettingsConfigDict(env_prefix="RGRID_", extra="ignore")

    database_url: str = "sqlite:///rgrid.db"
    # The control plane's own secret (API and orchestrator only, never a worker): worker tokens and
    # sealed env values are derived from it (rgrid_service.secrets).
    secret_key: SecretStr | None = None
    # The URL workers reach the API at (their agent and runner use the worker API there): the
    # local grid's API URL; on the control plane http://<private ip>:8000 (nginx).
    worker_api_url: str | None = None

    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = "rgrid"
    s3_secret_key: str = "rgrid-secret"
    s3_bucket: str = "rgrid"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # Endpoint the *client* reaches the store at (presigned URLs embed the host).
    s3_public_endpoint: str | None = None
    presign_expiry_seconds: int = 3600
    # An input larger than this is uploaded in parts of multipart_part_bytes (S3 allows at most
    # 5 GiB in one PUT; a part is at least 5 MiB except the last, and there are at most 10000).
    multipart_threshold_bytes: int = 5 * 1024 ** 3
    multipart_part_bytes: int = 512 * 1024 ** 2
    # Endpoint the *workers* reach the store at (None: s3_public_endpoint, else s3_endpoint): a
    # presigned URL's signature covers the Host the worker sends.
    s3_worker_endpoint: str | None = None
    # URLs handed to workers (inputs to fetch, outputs to put) expire soon: a worker asks again.
    worker_presign_expiry_seconds: int = 900
    # A worker's output PUTs expire sooner still (the runner asks for a fresh URL when one has):
    # what goes up through them is the worker's word, so a leaked URL is good for little time.
    worker_output_presign_expiry_seconds: int = 300

    ray_dashboard_url: str | None = None
    # The file holding the Ray cluster's token (token authentication is always on): the head's and
    # the orchestrator's RAY_AUTH_TOKEN_PATH; workers get its content in their launch environment.
    ray_token_file: str | None = None
    # Set by the local grid: where its state and logs are.
    local_grid_home: str | None = None
    # Whether `rgrid local up` starts a private Docker engine and the runtime images' registry for
    # its workers (rgrid_service.localgrid.docker). None: when this machine can (root, Debian's
    # docker.io and docker-registry); false: never (workers run python:3.11 in bubblewrap); true:
    # always, failing the start when it cannot.
    local_docker: bool | None = None
    # The runtime images' digests, as their builder recorded them (rgrid_core.imagedigests): the
    # only images workers run. Unset or missing: workers run no catalogue image in Docker.
    image_digests_file: str | None = None

    # The fleet. `process`: workers are local process groups; `pulumi`: the worker_pool stack.
    fleet: str = "process"
    min_workers: int = 0
    max_workers: int = 10
    provision_interval_seconds: float = 10.0
    # Hetzner bills every started hour: an idle worker is retired in the last
    # retire_margin_seconds before the end of its billing period.
    billing_period_seconds: float = 3600.0
    retire_margin_seconds: float = 180.0
    # A server whose agent has not sent a first heartbeat by then is declared dead.
    boot_timeout_seconds: float = 600.0
    # A failed fleet update is tried again after this, doubling up to 16 times as long.
    fleet_retry_seconds: float = 5.0
    server_type: str = "cx23"  # 2 vCPU / 4 GB shared (cx22 is retired)
    server_location: str = "fsn1"
    server_image: str = "debian-12"
    # The pulumi fleet: the folder holding the `pulumi` CLI (scripts/pulumi-engine.sh ensure prints
    # it), where its state lives, and the Hetzner API.
    pulumi_bin_dir: str | None = None
    pulumi_state_dir: str | None = None
    hcloud_token: str | None = None
    hcloud_endpoint: str | None = None  # None: Hetzner's own API
    # What a worker server pip-installs: the control plane sets it to its own repository and ref
    # (`rgrid[service] @ git+URL@REF`), so workers run the same code.
    worker_package: str = "rgrid[service]"
    # The control plane's private network and the workers' firewall (stacks/control_plane makes
    # them); None: the worker_pool stack makes its own.
    hcloud_network_id: int | None = None
    hcloud_firewall_id: int | None = None
    # A JSON price table replacing the built-in one (rgrid_service/fleet/prices.py).
    price_table: str | None = None
    # How often the orchestrator prices the attempts that ended (policies/costs).
    cost_interval_seconds: float = 5.0

    # The orchestrator's Prometheus metrics: served on host:port (None: not served; 0: a free
    # port), and how often it reads the runs that started and ended into them.
    orchestrator_metrics_host: str = "127.0.0.1"
    orchestrator_metrics_port: int | None = None
    metrics_interval_seconds: float = 2.0

    # Orchestrator timings. Dispatch runs when the queue's bell rings (rgrid_service.queuebell: a
    # run queued or ended, a worker registered), at most once per min gap; else a safety tick
    # every dispatch interval while runs wait for a slot, every idle interval when none does.
    dispatch_interval_seconds: float = 0.5
    dispatch_idle_interval_seconds: float = 5.0
    dispatch_min_gap_seconds: float = 0.05
    # SQLite grids: the loopback UDP port on which the orchestrator hears the API's bell (None: no
    # bell; PostgreSQL rings with NOTIFY and needs no port).
    wake_host: str = "127.0.0.1"
    wake_port: int | None = None
    redispatch_after_seconds: float = 60.0
    placement_window_seconds: float = 600.0
    # Runs handed to a full worker ahead of time, to start the moment one of its slots frees.
    # Twice a standard worker's slots: with fewer, short runs used up what was handed ahead
    # before the next dispatch and a slot sat idle (a run waiting behind long ones moves to a
    # free slot elsewhere, see policies.placement.steal).
    dispatch_prefetch_per_worker: int = 4
    sweep_interval_seconds: float = 5.0
    # One stretch of outages (database unreadable, workers' API probe failing) excuses silence for
    # at most this many x dead_after_seconds, counted from the last moment the control plane heard.
    outage_excuse_dead_afters: float = 5.0

    # Runs (the worker's own knobs are WorkerKnobs).
    default_timeout_seconds: int = 3600
    max_attempts: int = 3

    # Following a run or a batch (api/follow.py, Server-Sent Events): how often a stream looks for new
    # log chunks and status (one small indexed read per follower), and a batch's counts; how often a
    # queued run's wait is told again; a comment line when nothing else was sent for this long (keeps
    # proxies from closing an idle stream); at most this many streams per API process, each at most
    # this long (the client then resumes from its cursor).
    follow_poll_seconds: float = 0.2
    follow_batch_poll_seconds: float = 0.5
    follow_waiting_seconds: float = 1.0
    follow_keepalive_seconds: float = 15.0
    follow_max_streams: int = 500
    follow_max_seconds: float = 900.0

    # API keys each API process keeps once verified (api/keycache.py), so repeated reads skip the
    # key's lookup: a key revoked or rescoped in the database is honoured at most this many seconds
    # later (0: looked up on every request), and at most this many keys are kept per process.
    api_key_cache_seconds: float = 5.0
    api_key_cache_size: int = 10_000
    # API processes `python -m rgrid_service.api` starts (the local grid runs one), and the folder
    # where they keep their Prometheus figures for each other (None: one made per start).
    api_workers: int = 1
    api_metrics_dir: str | None = None

    # Per-tenant quotas (policies.quotas); the table tenant_quotas overrides them per tenant
    # (`python -m rgrid_service.admin set-quota`). 0: no limit.
    quota_max_queued_runs: int = 10_000  # uploading + queued
    quota_max_running_runs: int = 0  # running or placed at once; the rest wait
    quota_max_stored_bytes: int = 100 * 1024 ** 3  # kept inputs + outputs not yet expired

    # Retention (policies.retention): the files of ended runs, and kept inputs no run used for
    # this long, are deleted from the store. retention_seconds, when set, replaces retention_days.
    retention_days: float = 7.0
    retention_seconds: float | None = None
    retention_interval_seconds: float = 600.0
    retention_batch: int = 500  # runs (and blobs) looked at per pass

    @property
    def retention(self):
        from datetime import timedelta

        return timedelta(seconds=self.retention_seconds if self.retention_seconds is not None
                         else self.retention_days * 86400)


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()

"""The `pulumi` fleet: the Automation API converges the `worker_pool` stack (stacks/worker_pool).

One update at a time: a concurrent-update error means "still applying" (FleetBusy). An update that
was killed half-way leaves a lock and pending operations in the state; the next one removes the
lock of a process that no longer exists, clears the pending operations, and deletes any server a
pending create made that the state never recorded, so the servers that exist are exactly the
stack's. Engine output goes to the orchestrator's log.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import httpx

from rgrid_core.constants import WORKER_LABEL
from rgrid_core.localstate import alive
from rgrid_core.retry import retrying

from ..settings import ServiceSettings
from . import FleetBusy, FleetDiff, Server, ServerSpec
from .engine import Engine
from .launch import render_cloud_init, worker_launch

log = logging.getLogger("rgrid.fleet.pulumi")

PROJECT = "rgrid-worker-pool"
STACK = "workers"
SERVER_TYPE = "hcloud:index/server:Server"
OBSERVE_RETRY_SECONDS = 10.0


def caught_mid_write(error: BaseException) -> bool:
    """The engine read the stack's state file while an update (another process's) was writing it."""
    return "failed to load checkpoint" in str(error)


class PulumiFleet:
    name = "hetzner"

    def __init__(self, settings: ServiceSettings, engine: Engine, token: str, endpoint: str | None):
        self.settings = settings
        self.engine = engine
        self.token = token
        self.endpoint = endpoint
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "PulumiFleet":
        if not settings.pulumi_bin_dir:
            raise RuntimeError("RGRID_PULUMI_BIN_DIR is not set: run scripts/pulumi-engine.sh ensure and point it "
                               "at the folder it prints.")
        state = Path(settings.pulumi_state_dir or Path(settings.local_grid_home or ".") / "local" / "pulumi")
        token = settings.hcloud_token or ""
        if len(token) != 64:
            raise RuntimeError("RGRID_HCLOUD_TOKEN must hold a Hetzner Cloud API token (64 characters).")
        return cls(settings, Engine(Path(settings.pulumi_bin_dir), state), token, settings.hcloud_endpoint)

    # ---------------------------------------------------------------- the stack

    def _program(self, desired: list[ServerSpec]):
        from stacks.worker_pool import PoolConfig, WorkerRecord, worker_pool

        records = [WorkerRecord(d.worker_id, d.server_type, d.location, d.image,
                                render_cloud_init(worker_launch(d.worker_id, self.settings),
                                                  package=self.settings.worker_package))
                   for d in desired]
        return worker_pool(records, PoolConfig(token=self.token, endpoint=self.endpoint,
                                               network_id=self.settings.hcloud_network_id,
                                               firewall_id=self.settings.hcloud_firewall_id))

    def _stack(self, desired: list[ServerSpec]):
        from pulumi import automation as auto

        env = self.engine.env()
        opts = auto.LocalWorkspaceOptions(
            pulumi_home=env["PULUMI_HOME"], env_vars=env, pulumi_command=self.engine.command(),
            project_settings=auto.ProjectSettings(name=PROJECT, runtime="python",
                                                  backend=auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"])),
        )
        return auto.create_or_select_stack(stack_name=STACK, project_name=PROJECT,
                                           program=self._program(desired), opts=opts)

    # ---------------------------------------------------------------- the interface

    def observe(self) -> list[Server]:
        """The stack's servers. Read by other processes too (the API's fleet preview) while the
        orchestrator's update rewrites the state file: a read that catches it half-written is
        read again."""
        with self._lock:
            return retrying(lambda: self._servers(self._stack([])), seconds=OBSERVE_RETRY_SECONDS,
                            when=caught_mid_write, first_wait=0.1, max_wait=0.5, log=log)

    def preview(self, desired: list[ServerSpec]) -> FleetDiff:
        """The engine's preview: it takes no lock and writes no state, so a running update is
        looked for (its lock file, held by a live process) before and after, and means FleetBusy."""
        with self._lock, _busy_as_fleet_busy():
            _raise_if_updating(self.engine.locks())
            stack = self._stack(desired)
            ops: dict[str, str] = {}

            def on_event(event) -> None:
                pre = getattr(event, "resource_pre_event", None)
                if pre and pre.metadata.type == SERVER_TYPE:
                    ops[_worker_id(pre.metadata.urn)] = str(pre.metadata.op.value if hasattr(pre.metadata.op, "value")
                                                            else pre.metadata.op)

            stack.preview(on_event=on_event, on_output=_log_output)
            _raise_if_updating(self.engine.locks())
        kinds = {"create": [], "delete": [], "replace": [], "update": [], "same": []}
        for worker_id, op in sorted(ops.items()):
            key = {"create-replacement": "replace", "delete-replaced": "replace", "replace": "replace",
                   "create": "create", "delete": "delete", "update": "update"}.get(op, "same")
            if worker_id not in kinds[key]:
                kinds[key].append(worker_id)
        return FleetDiff(**{k: tuple(v) for k, v in kinds.items()}, details=ops)

    def recover(self) -> None:
        with self._lock, _busy_as_fleet_busy():
            self._recover(self._stack([]))

    def apply(self, desired: list[ServerSpec]) -> list[Server]:
        with self._lock, _busy_as_fleet_busy():
            stack = self._stack(desired)
            self._recover(stack)
            result = stack.up(on_output=_log_output)
            log.info("update %s: %s", result.summary.result, dict(result.summary.resource_changes or {}))
            return self._servers(stack)

    # ---------------------------------------------------------------- helpers

    def _servers(self, stack) -> list[Server]:
        servers = stack.outputs().get("servers")
        return [Server(w, str(i), "created") for w, i in (servers.value if servers else {}).items()]

    def _recover(self, stack) -> None:
        """Undo what a killed update left behind: its lock, its pending operations, and servers
        created by a pending create that the state never recorded."""
        _drop_stale_locks(self.engine.locks())
        state = stack.export_stack()
        deployment = state.deployment or {}
        pending = deployment.get("pending_operations") or []
        if not pending:
            return
        creates = [_worker_id(p["resource"]["urn"]) for p in pending
                   if p.get("type") == "creating" and p["resource"].get("type") == SERVER_TYPE]
        log.warning("clearing %d pending operation(s) of an interrupted update", len(pending))
        deployment["pending_operations"] = []
        state.deployment = deployment
        stack.import_stack(state)
        recorded = {s.worker_id for s in self._servers(stack)}
        for worker_id in creates:
            if worker_id not in recorded:
                self._delete_unrecorded(worker_id)

    def _delete_unrecorded(self, worker_id: str) -> None:
        base = (self.endpoint or "https://api.hetzner.cloud/v1").rstrip("/")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as api:
            found = api.get("/servers", params={"label_selector": f"{WORKER_LABEL}={worker_id}"})
            found.raise_for_status()
            for server in found.json()["servers"]:
                log.warning("deleting server %s (%s): created by an interrupted update, never recorded",
                            server["id"], worker_id)
                api.delete(f"/servers/{server['id']}").raise_for_status()


def _worker_id(urn: str) -> str:
    name = urn.rsplit("::", 1)[-1]
    return name[len("worker-"):] if name.startswith("worker-") else name


def _log_output(line: str) -> None:
    if line.strip():
        log.info("engine: %s", line.rstrip())


def _drop_stale_locks(locks: Path) -> None:
    """Lock files of updates whose process no longer runs on this machine."""
    if not locks.exists():
        return
    for lock in locks.rglob("*.json"):
        try:
            info = json.loads(lock.read_text())
            pid = int(info.get("pid", 0))
        except (OSError, ValueError):
            continue
        if pid and not alive(pid):
            log.warning("removing the lock of update process %d, which no longer runs", pid)
            lock.unlink(missing_ok=True)


def _raise_if_updating(locks: Path) -> None:
    """FleetBusy when an update holds the stack's lock (a lock file of a process that runs)."""
    if not locks.exists():
        return
    for lock in locks.rglob("*.json"):
        try:
            pid = int(json.loads(lock.read_text()).get("pid", 0))
        except (OSError, ValueError):
            continue
        if pid and alive(pid):
            raise FleetBusy(f"an update (process {pid}) holds the worker_pool stack")


class _busy_as_fleet_busy:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from pulumi.automation.errors import ConcurrentUpdateError

        if isinstance(exc, ConcurrentUpdateError):
            raise FleetBusy(str(exc).strip().splitlines()[-1] if str(exc).strip() else "update in progress") from exc
        return False

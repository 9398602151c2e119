"""The `process` fleet: a worker "server" is a local process group running the worker command.

The fast embedded default of the local grid. Which group stands for which worker is kept in
`<home>/local/fleet-process.json` (under a file lock: `rgrid local up` and the orchestrator may
both apply). Like a cloud server, a worker's group that vanished is not started again under the
same id: the dead-worker rule declares it dead and the fleet asks for a new worker. Workers start one at a time, each waited for until its Ray node has joined: on a
2-core machine, several raylets starting at once can overrun Ray's fixed registration window.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..localgrid.layout import local_dir, logs_dir
from ..localgrid.procs import alive, spawn, stop_groups
from ..localgrid.rayhead import wait_for_log
from ..settings import ServiceSettings
from . import FleetDiff, Server, ServerSpec
from .launch import worker_launch

log = logging.getLogger("rgrid.fleet.process")

JOIN_TIMEOUT = 90.0
START_TRIES = 2


class ProcessFleet:
    name = "local"

    def __init__(self, home: Path, settings: ServiceSettings, slots: int = 2):
        self.home = home
        self.settings = settings
        self.slots = slots
        self.path = local_dir(home) / "fleet-process.json"

    @contextmanager
    def _record(self):
        """{"groups": worker id -> process group, "started": every worker id ever started}, read
        and written under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                record = json.loads(self.path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                record = {"groups": {}, "started": []}
            yield record
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(self.path)

    def groups(self) -> dict[str, int]:
        """worker id -> process group of every worker whose group is alive."""
        with self._record() as record:
            groups = record["groups"]
            for worker_id in [w for w, pid in groups.items() if not alive(pid)]:
                del groups[worker_id]
            return dict(groups)

    def observe(self) -> list[Server]:
        return [Server(w, str(pid), "running") for w, pid in self.groups().items()]

    def preview(self, desired: list[ServerSpec]) -> FleetDiff:
        have = self.groups()
        with self._record() as record:
            started = set(record["started"])
        want = [d.worker_id for d in desired]
        return FleetDiff(create=tuple(w for w in want if w not in have and w not in started),
                         delete=tuple(sorted(set(have) - set(want))),
                         same=tuple(w for w in want if w in have))

    def recover(self) -> None:
        """Nothing to undo: each start and stop is recorded as it happens."""

    def apply(self, desired: list[ServerSpec]) -> list[Server]:
        diff = self.preview(desired)
        if diff.delete:
            with self._record() as record:
                pids = [record["groups"].pop(w) for w in diff.delete if w in record["groups"]]
            stop_groups(pids, grace=2)
            log.info("stopped %s", ", ".join(diff.delete))
        for worker_id in diff.create:
            self._start(worker_id)
        return self.observe()

    def _start(self, worker_id: str) -> None:
        launch = worker_launch(worker_id, self.settings, self.slots)
        argv = [resolve(launch.argv[0]), *launch.argv[1:]]
        log_path = logs_dir(self.home) / f"{worker_id}.log"
        for attempt in range(1, START_TRIES + 1):
            offset = log_path.stat().st_size if log_path.exists() else 0
            pid = spawn(argv, log_path, env={**worker_environ(), **launch.env})
            with self._record() as record:
                record["groups"][worker_id] = pid
                if worker_id not in record["started"]:
                    record["started"].append(worker_id)
            try:
                wait_for_log(log_path, "Ray runtime started", JOIN_TIMEOUT, f"Worker node {worker_id}", offset, pid)
                log.info("started %s (process group %d)", worker_id, pid)
                return
            except TimeoutError:
                stop_groups([pid], grace=5)
                with self._record() as record:
                    record["groups"].pop(worker_id, None)
                if attempt == START_TRIES:
                    raise

    def stop_all(self) -> None:
        with self._record() as record:
            pids = list(record["groups"].values())
            record["groups"].clear()
        stop_groups(pids, grace=8)


# Names in an environment variable that mark a credential, whatever its prefix, and the prefixes of
# tools whose variables are credentials or point at them: never passed on to a worker.
CREDENTIAL_MARKS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "DATABASE")
CREDENTIAL_PREFIXES = ("AWS_", "PG", "PULUMI_", "HCLOUD_", "S3_")


def credential_like(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(CREDENTIAL_PREFIXES) or any(m in upper for m in CREDENTIAL_MARKS)


def worker_environ() -> dict[str, str]:
    """This (control-plane) process's environment without what only the control plane holds: no
    RGRID_* setting of the control plane (the launch's own environment carries every setting a
    worker reads) and no variable named like a credential, RGRID_ or not (AWS_*, DATABASE_URL,
    PG*, PULUMI_*, *TOKEN*, *SECRET*, *PASSWORD*, *KEY*), so no database URL, store key, secret
    key or cloud token reaches a worker."""
    settings = {f"RGRID_{name.upper()}" for name in ServiceSettings.model_fields}
    return {k: v for k, v in os.environ.items() if k not in settings and not credential_like(k)}


def resolve(command: str) -> str:
    """A worker command's program as the install's bin directory has it (this interpreter's)."""
    here = Path(sys.executable).parent / command
    return str(here) if here.exists() else (shutil.which(command) or command)

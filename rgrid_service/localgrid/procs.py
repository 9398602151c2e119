"""Small process helpers for the local grid: free ports, detached process groups, stopping them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from rgrid_core.localstate import alive  # noqa: F401 - re-exported: the grid's process helpers in one place


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_udp_port() -> int:
    """A free loopback UDP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Start cmd detached in its own session, so it survives the CLI and can be killed as a group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def proc_stats():
    """(pid, the fields of /proc/<pid>/stat after the command name) for every process alive now."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                yield int(entry), f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def process_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (parent pid, process group, session, state) for every process, read from /proc."""
    return {pid: (int(fields[1]), int(fields[2]), int(fields[3]), fields[0]) for pid, fields in proc_stats()}


def group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the process group (a stopped one counts as alive)."""
    return any(pg == pgid and state != "Z" for _pp, pg, _sid, state in process_table().values())


def wait_for_port(port: int, timeout: float, what: str, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not start listening on {host}:{port} within {timeout:.0f} s.")


def stop_groups(pgids: list[int], grace: float = 10.0) -> None:
    """SIGTERM several process groups at once, then SIGKILL whatever outlives the grace period."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        for p in pgids:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.1)
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

"""Network namespaces for the chaos suite's partition scenario: the control plane and each worker are
hosts of their own, joined by point-to-point veth pairs, with no default route anywhere, so every
packet stays among the namespaces the suite creates (and removes).

    root ──veth── cp ──veth── w1, w2, w3
    10.241.254.1  10.241.254.2; 10.241.255.1 on its lo: every control-plane service
                  10.241.N.1 ─────────────────── 10.241.N.2 (worker N)

The root namespace (pytest) gets one /32 route, to the services' address. Workers reach the
services and each other (Ray moves objects between nodes) through cp, which forwards; they have no
route to the root namespace. A partition is the control plane's end of one worker's veth taken
down, as a cable pulled at the switch: the worker's packets are dropped, its TCP connections stall
and resume once the link is back up. (This kernel has no qdiscs or nftables, so dropping by filter
is not an option.)
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field

PREFIX = "rgc-"
SERVICE_IP = "10.241.255.1"  # every control-plane service listens here
ROOT_IP, ROOT_PEER = "10.241.254.1", "10.241.254.2"
WORKER_ROUTES = ("10.241.0.0/17", f"{SERVICE_IP}/32")  # the workers' /30s and the services, never 10.241.254.0/30
_OURS = re.compile(rf"^{PREFIX}[0-9a-f]{{4}}-(cp|w\d+)$")


def worker_ip(n: int) -> str:
    return f"10.241.{n}.2"


def unavailable() -> str | None:
    """Why this machine cannot build the namespaces, as a sentence; None when it can."""
    if shutil.which("ip") is None:
        return "the `ip` command is missing: install iproute2 (`apt-get install iproute2`)."
    if os.geteuid() != 0:
        return "creating network namespaces needs root: run the partition scenario as root."
    probe = f"{PREFIX}probe-{uuid.uuid4().hex[:4]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed ({made.stderr.strip()}): this kernel or container does not allow network namespaces."
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def pids_in(ns: str) -> list[int]:
    done = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def remove_leftovers() -> None:
    """Namespaces an earlier run of this scenario could not remove (its process was killed before its
    teardown). One with processes still inside may belong to a run going on now: refused."""
    for ns in namespaces():
        if not _OURS.match(ns):
            continue
        if pids_in(ns):
            raise RuntimeError(f"Network namespace {ns} from another partition test still has processes "
                               f"({pids_in(ns)}); wait for that test, or kill them and run `ip netns del {ns}`.")
        _ip("netns", "del", ns, check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if _OURS.match(name.removesuffix("-r") + "-cp") and name.endswith("-r"):
            _ip("link", "del", name, check=False)


@dataclass
class Topology:
    workers: int
    short: str = field(default_factory=lambda: uuid.uuid4().hex[:4])
    cut_off: set[int] = field(default_factory=set)

    def ns(self, name: str) -> str:
        return f"{PREFIX}{self.short}-{name}"

    @property
    def cp(self) -> str:
        return self.ns("cp")

    def worker_ns(self, n: int) -> str:
        return self.ns(f"w{n}")

    @property
    def root_link(self) -> str:
        return f"{PREFIX}{self.short}-r"

    def all(self) -> list[str]:
        return [self.cp] + [self.worker_ns(n) for n in range(1, self.workers + 1)]

    @staticmethod
    def exec_in(ns: str) -> list[str]:
        """The prefix that runs a command inside ns (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", ns]

    def create(self) -> None:
        remove_leftovers()
        route = _ip("route", "show", f"{SERVICE_IP}/32").stdout.strip()
        if route:
            raise RuntimeError(f"This machine already routes {SERVICE_IP} ({route}): another partition test is "
                               "running, or its leftovers are; remove them and try again.")
        cp = self.cp
        _ip("netns", "add", cp)
        _ip("-n", cp, "link", "set", "lo", "up")
        _ip("-n", cp, "addr", "add", f"{SERVICE_IP}/32", "dev", "lo")
        subprocess.run(self.exec_in(cp) + ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        # root <-> cp: pytest reaches the API, the database and the store, nothing else.
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", cp)
        _ip("addr", "add", f"{ROOT_IP}/30", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        _ip("-n", cp, "addr", "add", f"{ROOT_PEER}/30", "dev", "root")
        _ip("-n", cp, "link", "set", "root", "up")
        _ip("route", "add", f"{SERVICE_IP}/32", "via", ROOT_PEER, "dev", self.root_link)
        for n in range(1, self.workers + 1):
            w = self.worker_ns(n)
            _ip("netns", "add", w)
            _ip("-n", w, "link", "set", "lo", "up")
            _ip("-n", cp, "link", "add", f"w{n}", "type", "veth", "peer", "name", "cp", "netns", w)
            _ip("-n", cp, "addr", "add", f"10.241.{n}.1/30", "dev", f"w{n}")
            _ip("-n", cp, "link", "set", f"w{n}", "up")
            _ip("-n", w, "addr", "add", f"{worker_ip(n)}/30", "dev", "cp")
            _ip("-n", w, "link", "set", "cp", "up")
            for dest in WORKER_ROUTES:
                _ip("-n", w, "route", "add", dest, "via", f"10.241.{n}.1", "dev", "cp")

    def cut(self, n: int) -> None:
        """Worker n loses the control plane (and every other host): its link goes down at cp's end."""
        _ip("-n", self.cp, "link", "set", f"w{n}", "down")
        self.cut_off.add(n)

    def heal(self, n: int) -> None:
        _ip("-n", self.cp, "link", "set", f"w{n}", "up")
        self.cut_off.discard(n)

    def kill(self, ns: str, timeout: float = 10) -> None:
        """SIGKILL every process inside ns until none is left."""
        deadline = time.monotonic() + timeout
        while (pids := pids_in(ns)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def remove(self) -> list[str]:
        """Kill everything inside the namespaces, then remove them and the root's link. Returns
        sentences about anything that could not be removed (empty: all gone)."""
        problems = []
        for n in list(self.cut_off):
            self.heal(n)
        for ns in reversed(self.all()):
            self.kill(ns)
        for ns in reversed(self.all()):
            if pids_in(ns):
                problems.append(f"processes {pids_in(ns)} outlived SIGKILL in {ns}")
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.root_link, check=False)
        left = [ns for ns in namespaces() if ns.startswith(self.ns(""))]
        if left:
            problems.append(f"namespaces {left} are still there")
        return problems

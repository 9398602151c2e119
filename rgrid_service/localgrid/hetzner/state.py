"""The stand-in's memory: servers, actions, networks, firewalls, SSH keys and volumes, saved as JSON.

One re-entrant lock guards everything: API handlers, the boot ticker and kill threads all mutate it.
Every change is written to <state dir>/state.json (atomically), so a restarted stand-in still knows
its servers and the process groups it booted for them, and can still delete them.
Records are kept in API shape; private bookkeeping lives under the "_" key and is never rendered.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

from .common import HetznerError, iso, not_found

KINDS = ("servers", "actions", "networks", "firewalls", "ssh_keys", "primary_ips", "volumes")
# Distinct id ranges per kind make a mixed-up id fail loudly instead of hitting another resource.
_FIRST_ID = {"servers": 1001, "actions": 5_000_001, "networks": 2001, "firewalls": 3001,
             "ssh_keys": 4001, "primary_ips": 6001, "volumes": 7001}
SINGULAR = {"servers": "server", "networks": "network", "firewalls": "firewall", "ssh_keys": "ssh_key",
            "actions": "action", "primary_ips": "primary_ip", "volumes": "volume"}


class Store:
    def __init__(self, state_dir: Path, *, boot_delay: float = 2.0, action_delay: float = 0.0,
                 max_servers: int | None = None, clock=time.time):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.path = self.dir / "state.json"
        self.lock = threading.RLock()
        self.clock = clock
        self.config = {"boot_delay_seconds": float(boot_delay), "action_delay_seconds": float(action_delay),
                       "max_servers": max_servers,
                       # a running server's cloud-init time before its worker service starts
                       "init_delay_seconds": 0.0}
        self.data: dict = {"next_id": dict(_FIRST_ID), **{k: {} for k in KINDS}}
        if self.path.exists():
            loaded = json.loads(self.path.read_text())
            for k in KINDS:
                self.data[k] = loaded.get(k, {})
            self.data["next_id"].update(loaded.get("next_id", {}))

    def log_path(self, server_id: int) -> Path:
        return self.dir / "logs" / f"server-{server_id}.log"

    # -- persistence and generic records -------------------------------------------------------
    def save(self) -> None:
        with self.lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            tmp.chmod(0o600)  # user_data carries the workers' secrets
            os.replace(tmp, self.path)

    def new_id(self, kind: str) -> int:
        with self.lock:
            n = self.data["next_id"][kind]
            self.data["next_id"][kind] = n + 1
            return n

    def get(self, kind: str, rid) -> dict:
        """The live record (callers hold the lock while changing it, then save())."""
        with self.lock:
            rec = self.data[kind].get(str(rid))
            if rec is None:
                raise not_found(SINGULAR[kind])
            return rec

    def find(self, kind: str, rid) -> dict | None:
        with self.lock:
            return self.data[kind].get(str(rid))

    def all(self, kind: str) -> list[dict]:
        with self.lock:
            return sorted(self.data[kind].values(), key=lambda r: r["id"])

    def put(self, kind: str, rec: dict) -> dict:
        with self.lock:
            self.data[kind][str(rec["id"])] = rec
            self.save()
            return rec

    def remove(self, kind: str, rid) -> None:
        with self.lock:
            self.data[kind].pop(str(rid), None)
            self.save()

    def unique_name(self, kind: str, name: str, but=None) -> None:
        with self.lock:
            if any(r["name"] == name and r["id"] != but for r in self.data[kind].values()):
                raise HetznerError("uniqueness_error", f"{SINGULAR[kind]} name is already used",
                                   {"fields": [{"name": "name"}]})

    @staticmethod
    def public(rec: dict) -> dict:
        return copy.deepcopy({k: v for k, v in rec.items() if k != "_"})

    # -- actions -------------------------------------------------------------------------------
    def action(self, command: str, resources: list[tuple[int, str]], *, done_at: float | None | str = "auto",
               error: dict | None = None) -> dict:
        """Record an action; it turns to success at done_at (default: now + action delay; None = by hand)."""
        with self.lock:
            now = self.clock()
            if done_at == "auto":
                done_at = now + self.config["action_delay_seconds"]
            rec = {"id": self.new_id("actions"), "command": command, "status": "running", "progress": 0,
                   "started": iso(now), "finished": None, "error": None,
                   "resources": [{"id": rid, "type": rtype} for rid, rtype in resources],
                   "_": {"done_at": done_at, "error": error}}
            self.settle(rec)
            return self.put("actions", rec)

    def settle(self, rec: dict) -> dict:
        """Finish a running action whose time has come (lazily, on every read)."""
        with self.lock:
            done_at = rec["_"]["done_at"]
            if rec["status"] == "running" and done_at is not None and self.clock() >= done_at:
                err = rec["_"]["error"]
                rec.update(status="error" if err else "success", progress=100, finished=iso(done_at), error=err)
            return rec

    def finish_action(self, action_id: int) -> None:
        with self.lock:
            rec = self.find("actions", action_id)
            if rec is not None and rec["status"] == "running":
                rec["_"]["done_at"] = self.clock()
                self.settle(rec)
                self.save()

    def render_action(self, rec: dict) -> dict:
        with self.lock:
            return self.public(self.settle(rec))

    # -- server life cycle (processes are the Machines' business; this is only the bookkeeping) --
    def live_servers(self) -> list[dict]:
        with self.lock:
            return [s for s in self.all("servers") if s["status"] != "deleting"]

    def due_boots(self) -> list[int]:
        """Servers whose boot delay is over: set their status; return the ids that need a worker."""
        with self.lock:
            now, due, changed = self.clock(), [], False
            for s in self.data["servers"].values():
                p = s["_"]
                if p.get("boot_at") is None or p["boot_at"] > now or s["status"] == "deleting":
                    continue
                p["boot_at"], changed = None, True
                if p.get("never_boot"):
                    continue  # stays "initializing", like a server whose host never came up
                if p.get("power") == "on":
                    s["status"] = "running"
                    due.append(s["id"])
                else:
                    s["status"] = "off"
            if changed:
                self.save()
            return due

    def schedule_boot(self, server: dict, power_on: bool, status: str) -> float:
        with self.lock:
            boot_at = self.clock() + self.config["boot_delay_seconds"]
            server["status"] = status
            server["_"].update(boot_at=boot_at, power="on" if power_on else "off")
            self.save()
            return boot_at

    def record_boot(self, server_id: int, pgid: int | None, start_time: str | None) -> bool:
        """Note a booted process group; False if the server no longer wants it (deleted or powered off)."""
        with self.lock:
            s = self.find("servers", server_id)
            if s is None or s["status"] != "running" or s["_"].get("power") != "on":
                return False
            s["_"].update(pgid=pgid, pg_start=start_time)
            self.save()
            return True

    def take_pgid(self, server_id: int) -> tuple[int | None, str | None]:
        """Forget and return a server's process group (whoever takes it kills it)."""
        with self.lock:
            s = self.find("servers", server_id)
            if s is None:
                return None, None
            pgid, start = s["_"].get("pgid"), s["_"].get("pg_start")
            s["_"].update(pgid=None, pg_start=None)
            self.save()
            return pgid, start

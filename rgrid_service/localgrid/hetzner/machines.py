"""The "hardware": a ticker that boots servers when their boot delay is over, and background kills.

Booting and killing run on their own threads, never on the API's event loop: a kill may wait its
5 s grace period, and a booter supplied by a test may take as long as it likes.
"""
from __future__ import annotations

import threading
from typing import Callable

from .boot import BootRequest, spawn_worker, start_time, stop_group
from .state import Store

Booter = Callable[[BootRequest], "int | None"]
Killer = Callable[[int, "str | None"], None]


class Machines:
    def __init__(self, store: Store, booter: Booter | None = None, killer: Killer | None = None,
                 tick: float = 0.05):
        self.store, self.tick = store, tick
        self.booter = booter or spawn_worker
        self.killer = killer or stop_group
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        # Deletions a previous run did not finish: finish them now.
        for s in self.store.all("servers"):
            if s["status"] == "deleting":
                self.delete(s["id"], s["_"].get("delete_action"))
        self._thread = threading.Thread(target=self._loop, name="standin-ticker", daemon=True)
        self._thread.start()

    def stop(self, kill_servers: bool = False) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if kill_servers:
            for s in self.store.all("servers"):
                self.halt(s["id"])
        for t in list(self._workers):
            t.join(timeout=10)

    def _background(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [t]
        t.start()

    def poll(self) -> None:
        """Apply due status changes and start due boots (the ticker calls it, and so does every API call,
        so a client never sees a finished create action for a server that is not running yet)."""
        for server_id in self.store.due_boots():
            self._background(self._boot, server_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            self.poll()

    def _boot(self, server_id: int) -> None:
        # The server is running; its worker service starts once cloud-init is done (config
        # init_delay_seconds, 0 by default).
        if self._stop.wait(float(self.store.config.get("init_delay_seconds") or 0)):
            return
        with self.store.lock:
            s = self.store.find("servers", server_id)
            if s is None:
                return
            req = BootRequest(server_id, s["name"], s["_"].get("user_data") or "",
                              self.store.log_path(server_id), self.store.dir / "servers" / str(server_id))
        try:
            pgid = self.booter(req)
        except Exception as e:  # a broken booter must not take the ticker down
            with open(req.log_path, "a") as log:
                log.write(f"[boot] server {server_id}: booter failed: {e!r}\n")
            return
        if pgid is None:
            return
        started = start_time(pgid)
        if not self.store.record_boot(server_id, pgid, started):
            self.killer(pgid, started)  # deleted or powered off while it was booting

    def halt(self, server_id: int, then: Callable[[], None] | None = None) -> None:
        """Kill the server's process group (if any) in the background, then run `then`."""
        pgid, started = self.store.take_pgid(server_id)

        def run():
            if pgid is not None:
                self.killer(pgid, started)
            if then is not None:
                then()
        self._background(run)

    def delete(self, server_id: int, action_id: int | None) -> None:
        def gone():
            self.store.remove("servers", server_id)
            if action_id is not None:
                self.store.finish_action(action_id)
        self.halt(server_id, then=gone)

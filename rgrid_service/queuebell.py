"""The queue's bell: the API rings it when dispatch has something new to do (a run queued or
ended, a worker registered), and the orchestrator, waiting on it, dispatches at once instead of
polling the executions table, whose cost grows with history. The same bell tells the followers of
a run (api/follow.py) that a commit changed it (a claim, log chunks, a finish, a cancel): the API
process that committed wakes its own watcher in process, and on PostgreSQL the others hear
`NOTIFY rgrid_follow, '<origin> <run id>'` (PgListener, the machinery the orchestrator's LISTEN uses).

On PostgreSQL a ring is `NOTIFY rgrid_queue` and the orchestrator LISTENs on a connection of its
own, so it works wherever the two run. On SQLite (the local grid: API and orchestrator on one
machine) it is a datagram to the orchestrator's loopback wake port (RGRID_WAKE_PORT). A ring is a
hint, not a message: it carries nothing, rings close together are one, and a lost one costs only
the time to the orchestrator's next safety tick (a follower's: the watcher's next look). So
ringing never fails a request.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Callable

from sqlalchemy.engine import Engine

log = logging.getLogger("rgrid.queuebell")

CHANNEL = "rgrid_queue"
FOLLOW_CHANNEL = "rgrid_follow"  # payload: "<origin> <run id>", origin the sending Bell's (its own is ignored)
RING = b"queue"


def uses_notify(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class Bell:
    """The API's side: ring() after a commit that changed what dispatch should do; changed(run)
    after one that changed what a run's followers see (with ring_queue=True, both in one)."""

    def __init__(self, engine: Engine, wake_host: str, wake_port: int | None,
                 followers: Callable[[str], None] | None = None, origin: str = ""):
        self.engine = engine
        self._notify = uses_notify(engine)
        self._address = (wake_host, wake_port) if wake_port else None
        self._socket: socket.socket | None = None
        self._followers = followers  # this process's watcher: woken in process, at once
        self.origin = origin
        # NOTIFY needs no transaction: an autocommit connection sends it in one round trip.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") if self._notify else None

    def ring(self) -> None:
        self._tell(queue=True, run=None)

    def changed(self, execution_id: str, ring_queue: bool = False) -> None:
        """The run's followers, here and (PostgreSQL) in every other API process, look at it now."""
        self._tell(queue=ring_queue, run=execution_id)

    def _tell(self, queue: bool, run: str | None) -> None:
        if run is not None and self._followers is not None:
            self._followers(run)
        try:
            if self._notify:
                notices = ([f"pg_notify('{CHANNEL}', '')"] if queue else []) + \
                          ([f"pg_notify('{FOLLOW_CHANNEL}', %(follow)s)"] if run is not None else [])
                with self._autocommit.connect() as conn:
                    conn.exec_driver_sql("SELECT " + ", ".join(notices),
                                         {"follow": f"{self.origin} {run}"} if run is not None else ())
            elif queue and self._address:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                self._socket.sendto(RING, self._address)
        except Exception as e:  # noqa: BLE001 - the safety tick dispatches anyway
            log.debug("the queue's bell did not ring (%s); the orchestrator's safety tick will see the change", e)


class Listener(threading.Thread):
    """The orchestrator's side: sets `wake` on every ring. A daemon thread; stop() ends it."""

    def __init__(self, wake: threading.Event, engine: Engine, wake_host: str, wake_port: int | None):
        super().__init__(name="queue-bell", daemon=True)
        self.wake, self.engine = wake, engine
        self.address = (wake_host, wake_port) if wake_port else None
        self._stopping = threading.Event()
        self.listening = threading.Event()  # set once it hears rings (tests wait on it)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        if uses_notify(self.engine):
            self._listen_postgres()
        elif self.address:
            self._listen_udp()

    def _listen_udp(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(self.address)
        except OSError as e:
            log.error("cannot hear the queue's bell on %s:%s (%s): dispatching on the safety tick only",
                      *self.address, e)
            return
        self.listening.set()
        with sock:
            while not self._stopping.is_set():
                ready, _, _ = select.select([sock], [], [], 0.5)
                if ready:
                    while True:  # rings that arrived together are one
                        try:
                            sock.recv(64, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            break
                    self.wake.set()

    def _listen_postgres(self) -> None:
        PgListener(self.engine, CHANNEL, lambda _payload: self.wake.set(), self._stopping, self.listening,
                   "the queue's bell", "dispatching on the safety tick").listen()


class PgListener:
    """LISTEN on one PostgreSQL channel on a connection of its own until `stopping` is set, calling
    on_notice(payload) per notification, and on_notice(None) each time it starts hearing (whatever
    was sent while it did not). A lost connection is said once and tried again with backoff."""

    def __init__(self, engine: Engine, channel: str, on_notice: Callable[[str | None], None],
                 stopping: threading.Event, listening: threading.Event, what: str, meanwhile: str):
        self.engine, self.channel, self.on_notice = engine, channel, on_notice
        self.stopping, self.listening = stopping, listening
        self.what, self.meanwhile = what, meanwhile

    def listen(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff, away_since = 0.5, None
        while not self.stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    if away_since is not None:
                        log.info("hearing %s again after %.0f s", self.what, time.monotonic() - away_since)
                    backoff, away_since = 0.5, None
                    self.listening.set()
                    self.on_notice(None)  # whatever changed while it was not listening
                    while not self.stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self.on_notice(notice.payload)
            except psycopg.Error as e:
                self.listening.clear()
                if away_since is None:
                    away_since = time.monotonic()
                    log.warning("cannot hear %s (%s): %s until the database answers", self.what,
                                str(e).strip().splitlines()[0] if str(e).strip() else e, self.meanwhile)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

"""The queue's bell: the API rings it when dispatch has something new to do (a run queued or
ended, a worker registered), and the orchestrator, waiting on it, dispatches at once instead of
polling the executions table, whose cost grows with history.

On PostgreSQL a ring is `NOTIFY rgrid_queue` and the orchestrator LISTENs on a connection of its
own, so it works wherever the two run. On SQLite (the local grid: API and orchestrator on one
machine) it is a datagram to the orchestrator's loopback wake port (RGRID_WAKE_PORT). A ring is a
hint, not a message: it carries nothing, rings close together are one, and a lost one costs only
the time to the orchestrator's next safety tick. So ringing never fails a request.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time

from sqlalchemy.engine import Engine

log = logging.getLogger("rgrid.queuebell")

CHANNEL = "rgrid_queue"
RING = b"queue"


def uses_notify(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class Bell:
    """The API's side: ring() after a commit that changed what dispatch should do."""

    def __init__(self, engine: Engine, wake_host: str, wake_port: int | None):
        self.engine = engine
        self._notify = uses_notify(engine)
        self._address = (wake_host, wake_port) if wake_port else None
        self._socket: socket.socket | None = None

    def ring(self) -> None:
        try:
            if self._notify:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
                    conn.commit()
            elif self._address:
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
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff, away_since = 0.5, None
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if away_since is not None:
                        log.info("hearing the queue's bell again after %.0f s", time.monotonic() - away_since)
                    backoff, away_since = 0.5, None
                    self.listening.set()
                    self.wake.set()  # whatever changed while it was not listening
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wake.set()
            except psycopg.Error as e:
                self.listening.clear()
                if away_since is None:
                    away_since = time.monotonic()
                    log.warning("cannot hear the queue's bell (%s): dispatching on the safety tick until the "
                                "database answers", str(e).strip().splitlines()[0] if str(e).strip() else e)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

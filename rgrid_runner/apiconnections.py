"""Kept-alive HTTP/1.1 connections to the worker API, for its small JSON requests.

Every run makes at least two of them (claim, finish) and a no-op run costs the runner only a few
milliseconds of CPU, so the client's own cost shows: httpx spent 0.52 ms of CPU per request,
urllib3 0.29 ms, the standard library's http.client 0.2 ms (a request and its body go out in one
send, where urllib3 sends them apart, which also wakes the API twice). The presigned transfers
stay on httpx (rgrid_runner.workerclient).

One pool per client, shared by the threads of its process: a request takes an idle connection
(or opens one), and gives it back once its answer has been read in full.
"""
from __future__ import annotations

import http.client
import select
import ssl
import threading
from urllib.parse import urlsplit

# No answer: refused, reset, timed out, a broken TLS handshake (all OSError), or a reply that is no
# HTTP (http.client.HTTPException).
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Answer:
    """One answer: its status, its whole body and its reason phrase."""

    __slots__ = ("status_code", "content", "reason")

    def __init__(self, status_code: int, content: bytes, reason: str | None):
        self.status_code, self.content, self.reason = status_code, content, reason

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class ApiConnections:
    def __init__(self, base_url: str, timeout: float, connect_timeout: float, keep: int = 8):
        """base_url: http(s)://host[:port][/prefix]. timeout: the wait for each read of an answer;
        connect_timeout: for opening a connection. At most `keep` idle connections are kept."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"The worker API address {base_url!r} is not an http:// or https:// URL; "
                             "set RGRID_API_URL to one.")
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port
        self.prefix = url.path.rstrip("/")
        self.timeout, self.connect_timeout, self.keep = timeout, connect_timeout, keep
        self._tls = ssl.create_default_context() if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """Send one request and read its whole answer. Raises one of TRANSPORT_ERRORS when no
        answer came; the connection is then dropped, never reused."""
        conn = self._take()
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            r = conn.getresponse()
            answer = Answer(r.status, r.read(), r.reason)
        except BaseException:
            conn.close()
            raise
        if r.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return answer

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open()
            if not _closed_by_peer(conn):
                return conn
            conn.close()

    def _open(self) -> http.client.HTTPConnection:
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.connect_timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(self.timeout)
        return conn

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection that has something to read was closed by the API (its
    keep-alive timeout) or is out of step: either way it cannot carry the next request."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)

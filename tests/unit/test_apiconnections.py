"""rgrid_runner.apiconnections over real sockets: kept-alive connections are reused, and never one
the API closed (its keep-alive timeout, `Connection: close`) or one whose answer broke off.

The server is a raw socket server on 127.0.0.1 that counts connections and decides per connection
how many requests it answers before it closes (tests/httpstandin keeps every connection open)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from rgrid_runner.apiconnections import TRANSPORT_ERRORS, ApiConnections


class RawServer:
    """Answers `per_connection` requests on each connection, then closes it. close_header: say so
    in the last answer (`Connection: close`); broken: send half an answer instead, then close."""

    def __init__(self, per_connection: int = 1000, close_header: bool = False, broken: bool = False):
        self.per_connection, self.close_header, self.broken = per_connection, close_header, broken
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.request_lines: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            for n in range(1, self.per_connection + 1):
                line = f.readline()
                if not line:
                    return
                self.request_lines.append(line.decode().strip())
                length = 0
                while (header := f.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                f.read(length)
                if self.broken:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"half")
                    return
                last = n == self.per_connection and self.close_header
                body = b'{"ok":true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + (b"\r\nConnection: close" if last else b"") + b"\r\n\r\n" + body)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def make_server():
    made: list[RawServer] = []

    def make(**kw) -> RawServer:
        made.append(RawServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _post(pool: ApiConnections, path: str = "/v1/x"):
    return pool.request("POST", path, b'{"a":1}', {"Content-Type": "application/json"})


def test_requests_share_one_kept_alive_connection(make_server):
    server = make_server()
    pool = ApiConnections(server.url, 5, 5)
    for _ in range(5):
        answer = _post(pool)
        assert answer.status_code == 200 and answer.content == b'{"ok":true}'
    assert server.connections == 1
    pool.close()


def test_a_connection_the_api_closed_while_idle_is_not_used_again(make_server):
    server = make_server(per_connection=1)  # as a keep-alive timeout does, without saying so
    pool = ApiConnections(server.url, 5, 5)
    for _ in range(3):
        assert _post(pool).status_code == 200
        time.sleep(0.1)  # the server's close reaches the client
    assert server.connections == 3
    pool.close()


def test_an_answer_that_says_connection_close_ends_its_connection(make_server):
    server = make_server(per_connection=1, close_header=True)
    pool = ApiConnections(server.url, 5, 5)
    assert _post(pool).status_code == 200
    assert _post(pool).status_code == 200  # at once: the pool did not keep the closed one
    assert server.connections == 2
    pool.close()


def test_an_answer_that_breaks_off_raises_and_its_connection_is_dropped(make_server):
    broken = make_server(broken=True)
    pool = ApiConnections(broken.url, 5, 5)
    with pytest.raises(TRANSPORT_ERRORS):
        _post(pool)
    assert pool._idle == []
    pool.close()


def test_the_path_of_the_api_address_prefixes_every_request(make_server):
    server = make_server()
    pool = ApiConnections(server.url + "/api/", 5, 5)
    _post(pool, "/v1/worker/heartbeat")
    assert server.request_lines == ["POST /api/v1/worker/heartbeat HTTP/1.1"]
    pool.close()


def test_an_address_that_is_no_http_url_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="RGRID_API_URL"):
        ApiConnections("127.0.0.1:8000", 5, 5)

"""A scripted HTTP/1.1 server on 127.0.0.1 standing in for the worker API and the object store in
unit tests of the worker side (the real ones are exercised by tests/integration)."""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Scripted(ThreadingHTTPServer):
    """Answers each (method, path) from a list of scripted answers (the last one repeats), and
    records every request: its headers, body and the client port it came from."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: dict[tuple[str, str], list] = defaultdict(list)
        self.seen: list[dict] = []
        self.objects: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method: str, path: str, *answers) -> None:
        """Each answer: (status, JSON body or bytes)."""
        self.answers[(method, path)].extend(answers)

    def requests(self, method: str, path: str) -> list[dict]:
        return [r for r in self.seen if r["method"] == method and r["path"] == path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn and S3 do

    def log_message(self, *args):
        pass

    def _serve(self, method: str):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        srv: Scripted = self.server
        srv.seen.append(dict(method=method, path=self.path, headers=dict(self.headers), body=body,
                             port=self.client_address[1]))
        queue = srv.answers.get((method, self.path))
        if queue:
            status, payload = queue.pop(0) if len(queue) > 1 else queue[0]
        elif method == "GET" and self.path in srv.objects:
            status, payload = 200, srv.objects[self.path]
        elif method == "PUT":
            srv.objects[self.path] = body
            status, payload = 200, b""
        else:
            status, payload = 404, {"detail": f"nothing scripted for {method} {self.path}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")


@pytest.fixture
def server():
    srv = Scripted()
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()



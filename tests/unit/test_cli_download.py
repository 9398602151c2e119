"""Downloaded outputs land with the user's umask (not mkstemp's 0600), checked against their sha256."""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tenacity import stop_after_attempt

from rgrid.transfer import TransferError, current_umask, download

BODY = b"word,count\nthe,3\n"


@pytest.fixture
def store():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/object"
    server.shutdown()


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    saved = os.umask(0o022)
    os.umask(saved)
    yield set_mask
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
def test_a_downloaded_output_gets_the_users_umask(store, umask, tmp_path, mask, mode):
    umask(mask)
    assert current_umask() == mask
    target = tmp_path / "out" / "counts.csv"
    download(store, target, hashlib.sha256(BODY).hexdigest())
    assert target.read_bytes() == BODY
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [p.name for p in target.parent.iterdir()] == ["counts.csv"]  # no temp file left


def test_a_download_with_the_wrong_checksum_leaves_nothing(store, tmp_path):
    target = tmp_path / "counts.csv"
    once = download.retry_with(stop=stop_after_attempt(1))  # it would try 4 times, backing off
    with pytest.raises(TransferError, match="different checksum"):
        once(store, target, "0" * 64)
    assert list(tmp_path.iterdir()) == []

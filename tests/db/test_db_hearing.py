"""The sweep's HearingWatch: since when the control plane could hear its workers (a real database,
a real HTTP server for the workers' API)."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rgrid_service.db.session import make_engine
from rgrid_service.orchestrator.health import HearingWatch


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def api_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/health"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/health"


def test_the_first_read_after_a_failed_one_counts_as_a_return(engine, tmp_path):
    watch = HearingWatch()
    first, _ = watch.read(engine, {})
    assert watch.reachable_since is None  # an empty fleet: nothing to excuse at the start
    watch.read(engine, {})
    assert watch.reachable_since is None  # reading all along: unchanged
    away = make_engine(f"sqlite:///{tmp_path}/no/such/dir/rgrid.db")
    with pytest.raises(Exception):
        watch.read(away, {})
    back, _ = watch.read(engine, {})
    assert watch.reachable_since == back > first


def test_silence_while_the_workers_api_does_not_answer_does_not_count(engine, api_url):
    watch = HearingWatch(api_health_url=api_url)
    first, _ = watch.read(engine, {})
    watch.read(engine, {})
    assert watch.reachable_since is None
    watch.api_health_url = _closed_port_url()
    time.sleep(0.01)  # sweeps are seconds apart; the database clock must tell these reads apart
    down1, _ = watch.read(engine, {})
    time.sleep(0.01)
    down2, _ = watch.read(engine, {})
    assert watch.reachable_since == down2 > down1 > first  # it moves with every sweep while it is away
    watch.api_health_url = api_url
    watch.read(engine, {})
    assert watch.reachable_since == down2  # back: silence from the last sweep it was away


def test_a_fresh_orchestrator_that_hears_its_fleet_excuses_nothing(engine):
    """A crash-looping orchestrator must still count silence: a recent beat shows it was hearing."""
    from rgrid_service import lifecycle

    lifecycle.register_worker(engine, "w-1", "process", 2)
    watch = HearingWatch()
    watch.read(engine, {})
    assert watch.reachable_since is None


def test_a_probe_that_fails_while_heartbeats_land_excuses_nothing(engine, api_url):
    from rgrid_service import lifecycle

    lifecycle.register_worker(engine, "w-1", "process", 2)
    watch = HearingWatch(api_health_url=api_url)
    watch.read(engine, {})
    watch.api_health_url = _closed_port_url()  # wrong from the orchestrator's side only
    down, _ = watch.read(engine, {})
    assert watch.reachable_since == down
    time.sleep(0.01)
    assert lifecycle.heartbeat(engine, "w-1")  # the workers still reach the control plane
    watch.read(engine, {})
    watch.read(engine, {})
    assert watch.reachable_since == down  # no longer moves: their silence counts


def test_an_outage_excuses_no_more_than_the_cap(engine):
    watch = HearingWatch(api_health_url=_closed_port_url(), max_excused=timedelta(0))
    first, _ = watch.read(engine, {})  # the probe fails from the first read: the stretch starts here
    watch.read(engine, {})
    watch.read(engine, {})
    assert watch.reachable_since == first  # the probe still fails, but the excuse ended at the cap

"""A follower learns of a worker's commit at once, not at the watcher's next look: the API process
that commits a claim, log chunks or a finish wakes its own followers (SQLite and PostgreSQL), and on
PostgreSQL a follower on another API process hears it through NOTIFY. The watcher's look is set to
30 s in these tests, so a follower that waited for it would not see the end within their bounds;
these are behaviour tests, not speed measurements."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from rgrid.client import Client
from rgrid_core import workerwire as wire
from rgrid_service import auth, lifecycle
from rgrid_service.db.session import make_engine, upgrade_schema
from rgrid_service.fleet import records
from rgrid_service.secrets import keys_for
from tests.db.conftest import SECRET_KEY
from tests.db.test_db_api_processes import free_port
from tests.db.test_db_follow import new_run, serving, settings

ROOT = Path(__file__).resolve().parents[2]
LOOK_SECONDS = 30.0  # the watcher's periodic look: far longer than any bound below
BOUND = 10.0  # seconds a follower may take to see a told change (generous for a loaded CI machine)


class Follower:
    """`rgrid run`'s stream reader (Client.events) in a thread; events arrive on a queue."""

    def __init__(self, api_url: str, key: str, execution_id: str):
        self.client = Client(api_url, key, retry_seconds=10)
        self.events: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._follow, args=(execution_id,), daemon=True)
        self.thread.start()

    def _follow(self, execution_id: str) -> None:
        try:
            for event in self.client.events(f"/v1/executions/{execution_id}/follow"):
                self.events.put(event)
        except Exception as e:  # noqa: BLE001 - handed to the test, which fails with it
            self.events.put(e)

    def next_event(self, within: float):
        try:
            event = self.events.get(timeout=within)
        except queue.Empty:
            raise AssertionError(f"the follower saw nothing within {within} s") from None
        if isinstance(event, Exception):
            raise event
        return event

    def until(self, name: str, status: str, within: float):
        deadline = time.monotonic() + within
        while True:
            event = self.next_event(max(deadline - time.monotonic(), 0.01))
            if event.name == name and event.data.get("status") == status:
                return event

    def close(self) -> None:
        self.thread.join(BOUND)
        self.client.http.close()


def worker_of(engine, api_url: str) -> dict:
    """A registered worker's headers (its token), as its agent holds them."""
    (worker_id,) = records.request_workers(engine, 1, "local", "local", "local", 2)
    token = keys_for(settings("sqlite://")).worker_token(worker_id)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(api_url + wire.REGISTER, json={"slots": 2, "provider": "local"}, headers=headers).status_code == 200
    return {"id": worker_id, "headers": headers}


def dispatched_run(engine, worker: dict) -> str:
    run = new_run(engine, "tenant-a", status="queued", attempt=0)
    assert lifecycle.mark_dispatched(engine, [(run, worker["id"])]) == [(run, worker["id"])]
    return run


def claim_log_finish(api_url: str, worker: dict, run: str, follower: Follower) -> None:
    """Claim, log a line, finish: the follower sees each at once (the watcher's look is 30 s away)."""
    claimed = httpx.post(api_url + wire.CLAIM.format(id=run), headers=worker["headers"])
    assert claimed.status_code == 200, claimed.text
    attempt = claimed.json()["attempt"]
    follower.until("status", "running", BOUND)
    renewed = httpx.post(api_url + wire.RENEW.format(id=run, attempt=attempt), headers=worker["headers"],
                         json={"logs": [{"stream": "stdout", "data_b64": "aGVsbG8K"}], "stages": {}})
    assert renewed.status_code == 200, renewed.text
    logged = follower.next_event(BOUND)
    assert logged.name == "log" and logged.data["data_b64"] == "aGVsbG8K"
    finished = httpx.post(api_url + wire.FINISH.format(id=run, attempt=attempt), headers=worker["headers"],
                          json={"status": "succeeded", "exit_code": 0, "outputs": [], "logs": []})
    assert finished.status_code == 200, finished.text
    end = follower.next_event(BOUND)
    assert end.name == "end" and end.data["status"] == "succeeded"


def test_a_workers_commits_wake_a_follower_on_the_same_api_process(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    with serving(db_url, follow_poll_seconds=LOOK_SECONDS) as (host, port):
        api_url = f"http://{host}:{port}"
        worker = worker_of(engine, api_url)
        run = dispatched_run(engine, worker)
        follower = Follower(api_url, key, run)
        try:
            follower.until("status", "queued", BOUND)
            time.sleep(0.3)  # the stream is waiting on its watch, not in its first read
            claim_log_finish(api_url, worker, run, follower)
        finally:
            follower.close()


def test_a_cancel_wakes_a_follower_at_once(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    run = new_run(engine, "tenant-a", status="queued", attempt=0)
    with serving(db_url, follow_poll_seconds=LOOK_SECONDS) as (host, port):
        api_url = f"http://{host}:{port}"
        follower = Follower(api_url, key, run)
        try:
            follower.until("status", "queued", BOUND)
            time.sleep(0.3)
            assert httpx.post(f"{api_url}/v1/executions/{run}/cancel",
                              headers={"Authorization": f"Bearer {key}"}).status_code == 200
            end = follower.next_event(BOUND)
            assert end.name == "end" and end.data["status"] == "canceled"
        finally:
            follower.close()


@contextmanager
def api_process(db_url: str, log_file: Path):
    """`python -m rgrid_service.api` in a process of its own, its watcher's look 30 s."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_DATABASE_URL=db_url, RGRID_S3_ENDPOINT="127.0.0.1:1", RGRID_SECRET_KEY=SECRET_KEY,
               RGRID_FOLLOW_POLL_SECONDS=str(LOOK_SECONDS), PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "rgrid_service.api", "--port", str(port), "--log-level", "warning"],
                              env=env, cwd=ROOT, start_new_session=True, stdout=log_file.open("wb"),
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture
def pg_url(pg_server):
    name = "t_" + uuid.uuid4().hex[:16]
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.url(name)
    upgrade_schema(url)
    yield url
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
def test_a_follower_on_another_api_process_hears_the_commits_through_notify(pg_url, tmp_path):
    """The follower streams from one API process; the worker claims, logs and finishes through
    another, which shares only the database with it."""
    engine = make_engine(pg_url)
    try:
        key = auth.create_key(engine, "tenant-a")
        with api_process(pg_url, tmp_path / "followed.log") as followed, \
                serving(pg_url, follow_poll_seconds=LOOK_SECONDS) as (host, port):
            committing = f"http://{host}:{port}"
            worker = worker_of(engine, committing)
            run = dispatched_run(engine, worker)
            follower = Follower(followed, key, run)
            try:
                follower.until("status", "queued", BOUND)
                # The followed process starts LISTENing with its first follower and looks at every
                # followed run once it hears: wait until its LISTEN is there, so what follows is heard.
                deadline = time.monotonic() + BOUND
                while not listening_on(engine, "rgrid_follow"):
                    assert time.monotonic() < deadline, "the followed API process never LISTENed"
                    time.sleep(0.1)
                claim_log_finish(committing, worker, run, follower)
            finally:
                follower.close()
    finally:
        engine.dispose()


def listening_on(engine, channel: str) -> bool:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %(q)s AND datname = current_database()",
            {"q": f"LISTEN {channel}"}).scalar() > 0

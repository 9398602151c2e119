"""Following a run or a batch over one connection (GET …/follow, Server-Sent Events), on SQLite and
PostgreSQL: every chunk once in order across reconnects (also between two chunks of one stream),
the end on a terminal status and on a cancel, 404 for an unknown run and for another tenant's,
the bound on streams per process, and the CLI's client resuming through a connection cut mid-run."""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from rgrid import sse
from rgrid.client import Client
from rgrid_service import auth
from rgrid_service.api.app import create_app
from rgrid_service.db.models import Execution, LogChunk
from rgrid_service.db.session import engine_for
from rgrid_service.settings import ServiceSettings
from tests.db.conftest import SECRET_KEY
from tests.tcpcut import CuttableProxy

FAST = dict(follow_poll_seconds=0.02, follow_batch_poll_seconds=0.02, follow_waiting_seconds=0.05)


def settings(db_url: str, **overrides) -> ServiceSettings:
    return ServiceSettings(database_url=db_url, s3_endpoint="127.0.0.1:1", secret_key=SECRET_KEY,
                           **{**FAST, **overrides})


@contextmanager
def api_client(db_url: str, **overrides):
    app = create_app(settings(db_url, **overrides))
    with TestClient(app) as client:
        yield client
    engine_for(db_url).dispose()


@contextmanager
def serving(db_url: str, **overrides):
    """The API on a real server (uvicorn, in a thread): streams as a client sees them."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings(db_url, **overrides)), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield ("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        engine_for(db_url).dispose()


def new_run(engine, tenant_id: str, status: str = "running", **fields) -> str:
    execution_id = "ex-" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        conn.execute(insert(Execution).values(
            id=execution_id, tenant_id=tenant_id, status=status, script="s.py", args=[], env={},
            runtime="python:3.11", timeout_seconds=60, inputs=[], **{"attempt": 1, **fields}))
    return execution_id


def log(engine, execution_id: str, *chunks: tuple[str, bytes]) -> None:
    with engine.begin() as conn:
        for stream, data in chunks:
            conn.execute(insert(LogChunk).values(execution_id=execution_id, attempt=1, stream=stream, data=data))


def end(engine, execution_id: str, status: str = "succeeded", exit_code: int | None = 0, reason: str | None = None):
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == execution_id)
                     .values(status=status, exit_code=exit_code, reason=reason))


def events_of(text: str) -> list[sse.Event]:
    return list(sse.parse(iter(text.split("\n"))))


def logged(events) -> list[tuple[str, bytes]]:
    import base64

    return [(e.data["stream"], base64.b64decode(e.data["data_b64"])) for e in events if e.name == "log"]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


CHUNKS = [("stdout", b"one\n"), ("stdout", b"two\n"), ("stderr", b"\xff not utf-8\n"), ("stdout", b"three\n"),
          ("system", b"[rgrid] the end\n")]


def test_a_finished_runs_stream_carries_each_chunk_then_ends_with_its_status(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a")
    log(engine, ex, *CHUNKS)
    end(engine, ex, "failed", 3, "The script exited with code 3.")
    with api_client(db_url) as api:
        r = api.get(f"/v1/executions/{ex}/follow", headers=bearer(key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    assert logged(events) == CHUNKS
    ids = [int(e.id) for e in events if e.name == "log"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[-1].name == "end"
    assert events[-1].data["status"] == "failed" and events[-1].data["exit_code"] == 3
    assert events[-1].data["reason"] == "The script exited with code 3."
    assert int(events[-1].id) == ids[-1]


@pytest.mark.parametrize("cut_after", range(len(CHUNKS) + 1))
def test_resuming_from_any_event_id_gives_the_rest_once(db_url, engine, cut_after):
    """Including between the two stdout chunks one and two: a cursor is a chunk, not a stream."""
    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a")
    log(engine, ex, *CHUNKS)
    end(engine, ex)
    with api_client(db_url) as api:
        whole = events_of(api.get(f"/v1/executions/{ex}/follow", headers=bearer(key)).text)
        seen = [e for e in whole if e.name == "log"][:cut_after]
        last = seen[-1].id if seen else None
        headers = {**bearer(key), **({"Last-Event-ID": last} if last else {})}
        rest = events_of(api.get(f"/v1/executions/{ex}/follow", headers=headers).text)
        by_query = events_of(api.get(f"/v1/executions/{ex}/follow", params={"after": last or 0},
                                     headers=bearer(key)).text)
    assert logged(seen) + logged(rest) == CHUNKS
    assert logged(by_query) == logged(rest)
    assert rest[-1].name == "end" and rest[-1].data["status"] == "succeeded"


def test_a_canceled_runs_stream_ends_with_canceled(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    with api_client(db_url) as api:
        ex = new_run(engine, "tenant-a", status="queued")
        assert api.post(f"/v1/executions/{ex}/cancel", headers=bearer(key)).status_code == 200
        events = events_of(api.get(f"/v1/executions/{ex}/follow", headers=bearer(key)).text)
    assert [e.name for e in events] == ["end"]
    assert events[0].data["status"] == "canceled" and events[0].data["exit_code"] is None


def test_unknown_and_other_tenants_runs_are_404_with_a_sentence(db_url, engine):
    key_a = auth.create_key(engine, "tenant-a")
    key_b = auth.create_key(engine, "tenant-b")
    ex = new_run(engine, "tenant-a")
    with api_client(db_url) as api:
        for path, key in ((f"/v1/executions/{ex}/follow", key_b), ("/v1/executions/ex-nosuchrun/follow", key_a),
                          ("/v1/batches/b-nosuchbatch/follow", key_a)):
            r = api.get(path, headers=bearer(key))
            assert r.status_code == 404, (path, r.text)
            assert "for this API key" in r.json()["detail"]
        assert api.get(f"/v1/executions/{ex}/follow").status_code == 401
        for not_ours in ("banana", "-1", "9" * 30):  # not an id this API sent: left aside, ?after= counts
            end(engine, ex)
            log(engine, ex, ("stdout", b"x\n"))
            r = api.get(f"/v1/executions/{ex}/follow", params={"after": 0},
                        headers={**bearer(key_a), "Last-Event-ID": not_ours})
            assert r.status_code == 200 and logged(events_of(r.text))[0] == ("stdout", b"x\n")


def test_streams_per_process_are_bounded_and_given_back(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a")
    end(engine, ex)
    with api_client(db_url, follow_max_streams=1) as api:
        for _ in range(3):  # each finished stream gives its place back
            assert api.get(f"/v1/executions/{ex}/follow", headers=bearer(key)).status_code == 200
        assert api.get("/v1/executions/ex-nosuchrun/follow", headers=bearer(key)).status_code == 404
        assert api.get(f"/v1/executions/{ex}/follow", headers=bearer(key)).status_code == 200  # 404 gave it back
    with api_client(db_url, follow_max_streams=0) as api:
        r = api.get(f"/v1/executions/{ex}/follow", headers=bearer(key))
        assert r.status_code == 503 and "RGRID_FOLLOW_MAX_STREAMS" in r.json()["detail"]


def test_a_follower_that_goes_away_gives_its_place_back(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a")  # running: its stream does not end by itself
    with serving(db_url, follow_max_streams=1) as (host, port):
        url = f"http://{host}:{port}/v1/executions/{ex}/follow"
        with httpx.stream("GET", url, headers=bearer(key)) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a dropped line iterator closes the connection
            assert next(lines) == "id: 0"  # it streams
            refused = httpx.get(url, headers=bearer(key), timeout=10)
            assert refused.status_code == 503 and "RGRID_FOLLOW_MAX_STREAMS" in refused.json()["detail"]
        end(engine, ex)  # so that a stream served again ends by itself
        deadline = time.monotonic() + 20  # the server notices the disconnect and ends the first stream
        while (again := httpx.get(url, headers=bearer(key), timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, "the place of a follower that went away was not given back"
            time.sleep(0.1)
        assert again.status_code == 200 and events_of(again.text)[-1].name == "end", again.text


def test_a_live_run_followed_through_cut_connections_prints_every_byte_once(db_url, engine):
    """The CLI's client against a real server, through a proxy that drops the connection right
    after some chunks (each time between two chunks of stdout) while the run keeps writing: it
    resumes from its last event id each time."""
    import base64

    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a")
    sent = [("stdout", f"line {i}\n".encode()) for i in range(12)]

    def write():
        for chunk in sent:
            log(engine, ex, chunk)
            time.sleep(0.04)
        end(engine, ex)

    with serving(db_url) as target:
        proxy = CuttableProxy(target)
        writer = threading.Thread(target=write)
        try:
            client = Client(proxy.url, key, retry_seconds=20)
            got, statuses, cuts = [], [], 0
            writer.start()
            for event in client.events(f"/v1/executions/{ex}/follow"):
                if event.name == "status":
                    statuses.append(event.data["status"])
                elif event.name == "log":
                    got.append(base64.b64decode(event.data["data_b64"]))
                    if len(got) in (1, 2, 5, 8):
                        cuts += proxy.cut()
        finally:
            writer.join()
            proxy.close()
    assert got == [d for _, d in sent]
    # It really was cut, and came back (a cut that finds the client between connections, or one
    # after the end was already in its buffer, is no cut: the watcher's ticks send in bursts).
    assert cuts >= 1 and proxy.accepted >= 2 and proxy.accepted >= cuts
    assert event.name == "end" and event.data["status"] == "succeeded"
    assert statuses and set(statuses) == {"running"}


def test_a_queued_runs_status_says_what_it_waits_for(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    ex = new_run(engine, "tenant-a", status="queued", attempt=0)
    with engine.begin() as conn:
        conn.execute(update(Execution).where(Execution.id == ex).values(queued_at=Execution.created_at))
    with serving(db_url) as (host, port):
        client = Client(f"http://{host}:{port}", key, retry_seconds=5)
        statuses = []
        for event in client.events(f"/v1/executions/{ex}/follow"):
            if event.name == "status" and event.data["status"] == "queued":
                statuses.append(event.data["waiting"])
                if len(statuses) == 4:
                    end(engine, ex, "canceled", None, "Canceled by the user.")
    assert event.name == "end" and event.data["status"] == "canceled"
    # The first status comes at once, what it waits for once it has waited follow_waiting_seconds,
    # and then again every follow_waiting_seconds while it waits.
    assert statuses[0] is None, statuses
    assert all(w and w["sentence"] for w in statuses[1:4]), statuses


def test_a_batch_stream_shows_its_counts_until_every_run_ended(db_url, engine):
    key = auth.create_key(engine, "tenant-a")
    ids = [new_run(engine, "tenant-a", status="queued", batch_id="b-one") for _ in range(3)]
    with serving(db_url) as (host, port):
        client = Client(f"http://{host}:{port}", key, retry_seconds=5)
        views = []
        for event in client.events("/v1/batches/b-one/follow"):
            views.append((event.name, event.data["counts"]))
            if event.name == "progress":
                done = len(views)
                if done <= len(ids):
                    end(engine, ids[done - 1])
    assert views[0] == ("progress", {"queued": 3})
    assert views[-1] == ("end", {"succeeded": 3})
    assert all(name == "progress" for name, _ in views[:-1])


@contextmanager
def statements_on(engine):
    """The SQL statements the engine sends while inside (a SQLAlchemy before_cursor_execute listener)."""
    from sqlalchemy import event

    sent: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def watching(engine, followers_per_run: dict[str, int]):
    """A watcher with this many watches of each run, each set to what the run is now (idle)."""
    from rgrid_service.api import follow

    watcher = follow.Watcher(engine, poll_seconds=3600)
    heads = follow.read_heads(engine, list(followers_per_run))
    for ex, followers in followers_per_run.items():
        for _ in range(followers):
            watch = follow.Watch(ex)
            watch.expect(heads[ex].status, heads[ex].newest_chunk)
            watcher.watches.add(watch)
    return watcher


def test_a_watcher_tick_costs_the_same_statements_for_3_or_300_idle_followers(db_url, engine):
    import asyncio

    auth.create_key(engine, "tenant-a")
    few = {new_run(engine, "tenant-a"): 1 for _ in range(3)}
    many = {new_run(engine, "tenant-a"): 2 for _ in range(150)}  # 300 followers of 150 runs
    for ex in [*few, *many]:
        log(engine, ex, ("stdout", b"started\n"))
    sent_per_tick = []
    for followers in (few, many):
        watcher = watching(engine, followers)
        with statements_on(engine) as sent:
            asyncio.run(watcher.tick())
        sent_per_tick.append(len(sent))
        assert not any(w.changed.is_set() for w in watcher.watches), "an idle run woke its stream"
    assert sent_per_tick == [1, 1]


def test_a_watcher_wakes_only_the_streams_whose_run_changed(db_url, engine):
    import asyncio

    auth.create_key(engine, "tenant-a")
    quiet, logging_run, ending_run = (new_run(engine, "tenant-a") for _ in range(3))
    watcher = watching(engine, {quiet: 2, logging_run: 2, ending_run: 1})
    log(engine, logging_run, ("stdout", b"news\n"))
    end(engine, ending_run)
    asyncio.run(watcher.tick())
    woken = sorted(w.execution_id for w in watcher.watches if w.changed.is_set())
    assert woken == sorted([logging_run, logging_run, ending_run])
    # a stream that has sent the new chunk is not woken again by it
    for watch in watcher.watches:
        if watch.execution_id == logging_run:
            watch.expect(watch.shown_status, 10**12)
    asyncio.run(watcher.tick())
    assert sorted(w.execution_id for w in watcher.watches if w.changed.is_set()) == [ending_run]

"""Following a run or a batch over one connection: Server-Sent Events.

A run's stream carries its log chunks (`event: log`, `id:` the chunk id, which is the cursor), its
status whenever it changes (`event: status`; while queued, again every `follow_waiting_seconds`
with what it waits for, the first time once it has been followed that long: a run that starts
sooner, the usual case, never costs that look's statements on its way to the worker), and at the
end its final status and exit code (`event: end`), then ends.
A follower that comes back sends the last id it saw (`Last-Event-ID`, or `?after=`) and gets every
chunk after it, so no byte is lost or repeated.

How a run's stream learns of new data: at once when this process committed the change (the worker
API's claim, log chunks and finish, a cancel: `Watcher.changed`, called through the Bell), or heard
that another API process did (PostgreSQL: `NOTIFY rgrid_follow`, which the watcher LISTENs for on a
connection of its own while anyone follows: queuebell.PgListener); and, as the safety net for
whatever else changes a run (the orchestrator's re-queues and time limits, a lost notice, several
API processes on SQLite), one `Watcher` per API process (app.state.follow_watcher) looks, every
`follow_poll_seconds` while anyone follows, at every followed run at once: one thread
hop, one statement for their status fields and newest chunk ids (`WHERE id IN (...)`, with a
correlated `max(id)`: one seek in the log_chunks index on (execution_id, id) per run), the IN list
cut into pieces of `WATCH_IDS_PER_STATEMENT`. It wakes only the streams whose run differs
from what they last sent (another status, or a chunk after their cursor); a woken stream reads its
status and chunks itself (`read_run`, on a pooled connection returned at once). So an idle
follower costs no statement of its own, and the cost of a tick does not grow with the followers
of one run. The API processes share no memory with the worker API that writes the logs (several
processes in production), so the database is what they share. Each API process streams at most
`follow_max_streams` at once and each stream lasts at most `follow_max_seconds` (the client then
reconnects with its cursor), so followers cannot pile up on a process. A batch's stream still reads
its counts itself every `follow_batch_poll_seconds`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import AsyncIterator

import anyio
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rgrid_core.states import TERMINAL, ExecutionStatus

from ..db.models import Execution, LogChunk
from ..queuebell import FOLLOW_CHANNEL, PgListener, uses_notify
from ..settings import ServiceSettings
from . import progress, queries, schemas
from .errors import NotFound, Unavailable

WATCH_IDS_PER_STATEMENT = 500  # well under SQLite's 32766 bound parameters and PostgreSQL's 65535
log = logging.getLogger("rgrid.api.follow")

CHUNKS_PER_READ = 32  # at most ~8 MiB per read (chunks are up to ~256 KiB); a full read is followed at once


def busy_sentence(limit: int) -> str:
    return (f"This API process is already streaming {limit} runs (RGRID_FOLLOW_MAX_STREAMS), so it cannot "
            "follow one more now. Nothing is lost: try again in a few seconds (the CLI does), or look at the "
            "run with `rgrid status ID` and `rgrid logs ID`.")


class Streams:
    """How many streams this process serves, bounded: take() refuses one more with a sentence."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> "Slot":
        with self._lock:
            if self.open >= self.limit:
                raise Unavailable(busy_sentence(self.limit))
            self.open += 1
        return Slot(self)

    def _give_back(self) -> None:
        with self._lock:
            self.open -= 1


class Slot:
    """One stream's place; released once, by the stream's end or when its generator is dropped
    unstarted (a client gone before the first byte)."""

    def __init__(self, streams: Streams):
        self._streams: Streams | None = streams

    def release(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams._give_back()

    def hold_until_gone(self, body) -> None:
        weakref.finalize(body, self.release)


STATUS_FIELDS = ("status", "exit_code", "reason", "worker_id", "attempt")


def status_of(row) -> tuple:
    """A run's status fields in STATUS_FIELDS order, from a row or a RunState: what a stream sends
    and what the watcher compares it with, so the two cannot drift apart."""
    return (row.status, row.exit_code, row.reason, row.worker_id, row.attempt or 0)


@dataclass
class RunState:
    """One look at a run: its status fields and the chunks after the cursor."""

    status: str
    exit_code: int | None
    reason: str | None
    worker_id: str | None
    attempt: int
    chunks: list

    def status_event(self) -> dict:
        return dict(zip(STATUS_FIELDS, status_of(self)))


def read_run(engine: Engine, tenant_id: str, execution_id: str, after: int) -> RunState:
    """The run's status, then its chunks after `after` (in this order: a terminal status read
    first means every chunk was committed before it, so an empty read then is the end). NotFound
    for a missing run and another tenant's alike."""
    ex_table, chunks = Execution.__table__, LogChunk.__table__
    with engine.connect() as conn:
        row = conn.execute(
            select(ex_table.c.status, ex_table.c.exit_code, ex_table.c.reason, ex_table.c.worker_id,
                   ex_table.c.attempt)
            .where(ex_table.c.id == execution_id, ex_table.c.tenant_id == tenant_id)
        ).first()
        if row is None:
            raise NotFound(f"No execution {execution_id!r} for this API key. `rgrid list` shows yours.")
        found = conn.execute(
            select(chunks.c.id, chunks.c.attempt, chunks.c.stream, chunks.c.data)
            .where(chunks.c.execution_id == execution_id, chunks.c.id > after)
            .order_by(chunks.c.id).limit(CHUNKS_PER_READ)
        ).all()
    return RunState(*status_of(row), found)


@dataclass(frozen=True)
class RunHead:
    """What the watcher sees of a run in one look: its status fields and its newest chunk id."""

    status: tuple
    newest_chunk: int


def read_heads(engine: Engine, execution_ids: list[str]) -> dict[str, RunHead]:
    """The heads of these runs (a missing run is absent): one statement per WATCH_IDS_PER_STATEMENT
    runs, on one pooled connection. The newest chunk is a correlated max(id) per run, one seek at the
    end of the run's range of the log_chunks (execution_id, id) index on SQLite and PostgreSQL alike,
    however long its log (a GROUP BY over the runs would read each run's whole range)."""
    ex_table, chunks = Execution.__table__, LogChunk.__table__
    newest_chunk = (select(func.max(chunks.c.id)).where(chunks.c.execution_id == ex_table.c.id)
                    .scalar_subquery().label("newest_chunk"))
    heads: dict[str, RunHead] = {}
    with engine.connect() as conn:
        for start in range(0, len(execution_ids), WATCH_IDS_PER_STATEMENT):
            piece = execution_ids[start:start + WATCH_IDS_PER_STATEMENT]
            for row in conn.execute(
                select(ex_table.c.id, ex_table.c.status, ex_table.c.exit_code, ex_table.c.reason,
                       ex_table.c.worker_id, ex_table.c.attempt, newest_chunk).where(ex_table.c.id.in_(piece))
            ):
                heads[row.id] = RunHead(status_of(row), row.newest_chunk or 0)
    return heads


class Watch:
    """One stream's interest in its run: what it has sent (status tuple, cursor), and an event the
    watcher sets when the run differs from that, or when a commit of it was told (poke)."""

    def __init__(self, execution_id: str):
        self.execution_id = execution_id
        self.shown_status: tuple | None = None
        self.cursor = 0
        self.changed = asyncio.Event()
        self._poked = False  # told of a commit since the stream began its last read

    def reading(self) -> None:
        """The stream begins a read: a commit told after this may be one the read missed."""
        self._poked = False

    def poke(self) -> None:
        self._poked = True
        self.changed.set()

    def expect(self, shown_status: tuple, cursor: int) -> None:
        """What the stream has sent; the watcher wakes it when its run differs. A poke that came
        during the read stays set: the stream reads once more rather than miss that commit."""
        self.shown_status, self.cursor = shown_status, cursor
        if not self._poked:
            self.changed.clear()

    def differs(self, head: RunHead | None) -> bool:
        return head is None or head.status != self.shown_status or head.newest_chunk > self.cursor

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self.changed.wait(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return False
        return True


class Watcher:
    """What wakes this API process's streams: told commits (changed(), from any thread), on
    PostgreSQL the other processes' notices, and the periodic look at every followed run (see the
    module docstring). Its task runs on the event loop of the streams while there are any, and
    stops when the last one leaves; the listener runs from the first follower to close()."""

    def __init__(self, engine: Engine, poll_seconds: float):
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.watches: set[Watch] = set()
        self.origin = secrets.token_hex(4)  # this process's notices carry it: it ignores its own
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False  # the last look failed: said once, not every tick
        self._hears_others = engine is not None and uses_notify(engine)  # PostgreSQL: other processes' notices
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self.listening = threading.Event()  # set while it hears other processes' notices (tests wait on it)

    def watch(self, execution_id: str) -> Watch:
        watch = Watch(execution_id)
        self.watches.add(watch)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._task = loop, loop.create_task(self._run(), name="rgrid-follow-watcher")
        if self._listener is None and self._hears_others:
            self._listener = threading.Thread(target=self._listen, name="follow-notices", daemon=True)
            self._listener.start()
        return watch

    def drop(self, watch: Watch) -> None:
        self.watches.discard(watch)

    def close(self) -> None:
        """Stop hearing other processes' notices (the app's shutdown)."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(5)

    def changed(self, execution_id: str) -> None:
        """A commit changed this run: wake its streams now. Safe from any thread (the worker API's
        handlers run in the thread pool); does nothing when nobody here follows it."""
        loop = self._loop
        if loop is None or loop.is_closed() or not any(w.execution_id == execution_id for w in list(self.watches)):
            return
        try:
            loop.call_soon_threadsafe(self._poke, execution_id)
        except RuntimeError:  # the loop closed meanwhile: no stream is left to wake
            pass

    def _poke(self, execution_id: str) -> None:
        for watch in list(self.watches):
            if watch.execution_id == execution_id:
                watch.poke()

    def _listen(self) -> None:
        PgListener(self.engine, FOLLOW_CHANNEL, self._heard, self._stopping, self.listening,
                   "other API processes' run changes", "followers learn of them on the watcher's look").listen()

    def _heard(self, payload: str | None) -> None:
        """A notice from the listener's thread: one run another process changed, or None (it just
        started hearing): a look at every followed run, for what it may have missed."""
        if payload is None:
            loop = self._loop
            if loop is not None and not loop.is_closed() and self.watches:
                try:
                    asyncio.run_coroutine_threadsafe(self.tick(), loop)
                except RuntimeError:
                    pass
            return
        origin, _, execution_id = payload.partition(" ")
        if origin != self.origin:
            self.changed(execution_id)

    async def _run(self) -> None:
        while self.watches:
            await asyncio.sleep(self.poll_seconds)
            await self.tick()

    async def tick(self) -> None:
        """One look at every followed run; wakes the streams whose run differs from what they sent."""
        watches = list(self.watches)
        if not watches:
            return
        try:
            heads = await anyio.to_thread.run_sync(read_heads, self.engine, sorted({w.execution_id for w in watches}))
        except Exception:  # the database away: the streams keep their keepalives, the next tick tries again
            if not self._failing:
                log.warning("Could not look at the followed runs; trying again every %s s (said once until "
                            "it works again).", self.poll_seconds, exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.info("Looking at the followed runs again.")
            self._failing = False
        for watch in watches:
            if watch.differs(heads.get(watch.execution_id)):
                watch.changed.set()


def waiting_now(engine: Engine, tenant_id: str, execution_id: str, settings: ServiceSettings) -> dict | None:
    """What a queued run waits for, as GET /v1/executions/{id} shows it (None once it is not queued)."""
    try:
        ex = queries.owned(engine, tenant_id, execution_id)
    except NotFound:
        return None
    found = progress.waiting_of(engine, ex, settings.quota_max_running_runs)
    return schemas.WaitingView.model_validate(found, from_attributes=True).model_dump() if found else None


def sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; data is one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


KEEPALIVE = b": still here\n\n"  # a comment: proxies and the client's read timeout see traffic


async def run_events(engine: Engine, settings: ServiceSettings, watcher: Watcher, watch: Watch, tenant_id: str,
                     execution_id: str, after: int, first: RunState, slot: Slot) -> AsyncIterator[bytes]:
    """The run's stream from cursor `after`, starting with the look the route took (`first`, read
    after `watch` began). Between reads it waits for the watcher to say its run changed, or for a
    keepalive, a queued run's `waiting` update or its time limit to be due."""
    clock = time.monotonic
    ends_at = clock() + settings.follow_max_seconds
    shown_status: tuple | None = None
    last_sent = clock()
    next_waiting = clock() + settings.follow_waiting_seconds  # the CLI shows what a run waits for after 1 s
    state = first
    try:
        while True:
            for r in state.chunks:
                yield sse("log", {"id": r.id, "attempt": r.attempt, "stream": r.stream,
                                  "data_b64": base64.b64encode(r.data).decode()}, r.id)
                after = r.id
                last_sent = clock()
            full = len(state.chunks) == CHUNKS_PER_READ
            if state.status in TERMINAL and not full:
                yield sse("end", state.status_event(), after)
                return
            status = state.status_event()
            queued = state.status == ExecutionStatus.QUEUED
            waiting = None
            if queued and clock() >= next_waiting:
                waiting = await anyio.to_thread.run_sync(waiting_now, engine, tenant_id, execution_id, settings)
                next_waiting = clock() + settings.follow_waiting_seconds
            if tuple(status.values()) != shown_status or waiting is not None:
                yield sse("status", {**status, "waiting": waiting}, after)
                shown_status = tuple(status.values())
                last_sent = clock()
            if clock() >= ends_at:
                return  # the client reconnects from `after`
            if not full:
                watch.expect(shown_status, after)
                keepalive_at = last_sent + settings.follow_keepalive_seconds
                wake_at = min(ends_at, keepalive_at, next_waiting if queued else ends_at)
                woken = await watch.wait(wake_at - clock())
                if clock() >= keepalive_at:
                    yield KEEPALIVE
                    last_sent = clock()
                if not woken:  # nothing new: only a keepalive, a `waiting` update or the time limit was due
                    state = replace(state, chunks=[])
                    continue
            watch.reading()
            state = await anyio.to_thread.run_sync(read_run, engine, tenant_id, execution_id, after)
    finally:
        watcher.drop(watch)
        slot.release()


def batch_counts(engine: Engine, tenant_id: str, batch_id: str) -> dict:
    return queries.batch_view(engine, tenant_id, batch_id).model_dump()


async def batch_events(engine: Engine, settings: ServiceSettings, tenant_id: str, batch_id: str,
                       first: dict, slot: Slot) -> AsyncIterator[bytes]:
    """A batch's counts (`event: progress`) whenever they change, and `event: end` with the last
    counts once every execution has ended. Counts are state, not a log: a follower that comes
    back simply gets the current ones."""
    clock = time.monotonic
    ends_at = clock() + settings.follow_max_seconds
    shown = None
    last_sent = clock()
    view = first
    try:
        while True:
            if view["finished"]:
                yield sse("end", view)
                return
            if view != shown:
                yield sse("progress", view)
                shown, last_sent = view, clock()
            elif clock() - last_sent >= settings.follow_keepalive_seconds:
                yield KEEPALIVE
                last_sent = clock()
            if clock() >= ends_at:
                return
            await anyio.sleep(settings.follow_batch_poll_seconds)
            view = await anyio.to_thread.run_sync(batch_counts, engine, tenant_id, batch_id)
    finally:
        slot.release()

"""Moves a script's stdout/stderr into the database while it runs, bounded and fenced.

A reader thread only reads pipes, so a chatty script never blocks on the database; the owner calls
take() periodically and writes what it gets, which is also the lease check: a refused write means
"stop, you are fenced".

One thread polls both of a script's pipes, so their output is queued in the order it was read;
with two threads, a line written to stdout could be queued after a stderr line written later. When
both pipes have output waiting at the same instant, stdout's is taken first.

That thread is one per process (_Reader), serving the pipes of every run in it: a thread started
per run cost 0.1 ms of CPU and, on a busy machine, 0.5-1.5 ms of the run's wall time before the
new thread had been scheduled (Thread.start waits for it).
"""
from __future__ import annotations

import logging
import os
import queue
import select
import threading

ORDER = ("stdout", "stderr", "system")
log = logging.getLogger("rgrid.logpump")


class LogPump:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.kept = 0
        self.dropped = 0
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.truncation_noted = False
        self._open = 0  # pipes not at end of file yet
        self._lock = threading.Lock()
        self._ended = threading.Event()  # every pipe given to start() reached end of file
        self._ended.set()

    def start(self, pipes: dict[str, int]) -> None:
        """Read these pipes (stream name -> read end) until each reaches end of file, and close
        them then. The process's reader thread reads them."""
        if not pipes:
            return
        with self._lock:
            self._open += len(pipes)
            self._ended.clear()
        _Reader.shared().add(self, pipes)

    def _pipe_ended(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self._ended.set()

    def join(self, timeout: float) -> bool:
        """Wait up to timeout for every pipe to reach end of file; True when they have."""
        return self._ended.wait(timeout)

    def drained(self) -> bool:
        return self._ended.is_set() and self.queue.empty()

    def take(self) -> tuple[list[tuple[str, bytes]], bool]:
        """Pending chunks (coalesced per stream, cut at the limit) and whether truncation began now."""
        chunks: list[tuple[str, bytes]] = []
        while True:
            try:
                stream, data = self.queue.get_nowait()
            except queue.Empty:
                break
            room = self.limit - self.kept
            if room <= 0:
                self.dropped += len(data)
                continue
            if len(data) > room:
                self.dropped += len(data) - room
                data = data[:room]
            self.kept += len(data)
            if chunks and chunks[-1][0] == stream and len(chunks[-1][1]) < 256 * 1024:
                chunks[-1] = (stream, chunks[-1][1] + data)
            else:
                chunks.append((stream, data))
        newly_truncated = self.dropped > 0 and not self.truncation_noted
        return chunks, newly_truncated

    def truncation_note(self) -> bytes:
        return (
            f"\n[rgrid] output truncated: only the first {self.kept} bytes were kept; "
            f"{self.dropped} more bytes were discarded (log limit {self.limit} bytes).\n"
        ).encode()


class _Reader:
    """The one thread per process that reads the pipes of every LogPump in it. New pipes are handed
    over under a lock and a byte on a wake pipe interrupts its poll. Each pipe is read and closed
    by this thread alone; a pipe that fails to read counts as ended, so no run waits for it."""

    _lock = threading.Lock()
    _instance: "_Reader | None" = None

    @classmethod
    def shared(cls) -> "_Reader":
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def __init__(self):
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller = select.poll()
        self.poller.register(self.wake_r, select.POLLIN)
        self.pipes: dict[int, tuple[LogPump, str, int]] = {}  # fd -> (pump, stream, rank)
        self.handed: list[tuple[int, LogPump, str]] = []  # added since the last poll
        self.handed_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="log-reader")
        self.thread.start()

    def add(self, pump: LogPump, pipes: dict[str, int]) -> None:
        with self.handed_lock:
            self.handed.extend((fd, pump, stream) for stream, fd in pipes.items())
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the wake pipe is full: the reader is woken already

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:
            # Never expected; should it happen, the runs reading through this thread must not wait
            # for pipes nobody reads: their output ends here, and the next run starts a new reader.
            log.exception("the log reader failed; the output of the runs it read ends here")
            with self.handed_lock:
                handed, self.handed = self.handed, []
            for fd, pump, stream in handed:
                self.pipes.setdefault(fd, (pump, stream, 0))
            for fd in list(self.pipes):
                self._end(fd)

    def _loop(self) -> None:
        while True:
            with self.handed_lock:
                handed, self.handed = self.handed, []
            for fd, pump, stream in handed:
                self.pipes[fd] = (pump, stream, ORDER.index(stream) if stream in ORDER else len(ORDER))
                self.poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            ready = self.poller.poll()
            for fd, _event in sorted(ready, key=lambda fe: self.pipes[fe[0]][2] if fe[0] in self.pipes else -1):
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._read(fd)

    def _read(self, fd: int) -> None:
        pump, stream, _rank = self.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except OSError:
            log.exception("reading the %s pipe of a run failed; its output ends here", stream)
            data = b""
        if data:
            pump.queue.put((stream, data))
            return
        self.poller.unregister(fd)
        self._end(fd)

    def _end(self, fd: int) -> None:
        """The pipe reached its end (or can no longer be read): close it and tell its run."""
        pump, _stream, _rank = self.pipes.pop(fd)
        try:
            os.close(fd)
        except OSError:
            pass
        pump._pipe_ended()

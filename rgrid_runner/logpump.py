"""Moves a script's stdout/stderr into the database while it runs, bounded and fenced.

A reader thread only reads pipes, so a chatty script never blocks on the database; the owner calls
take() periodically and writes what it gets, which is also the lease check: a refused write means
"stop, you are fenced".

One thread polls both of a script's pipes, so their output is queued in the order it was read;
with two threads, a line written to stdout could be queued after a stderr line written later. When
both pipes have output waiting at the same instant, stdout's is taken first.
"""
from __future__ import annotations

import os
import queue
import select
import threading
import time

ORDER = ("stdout", "stderr", "system")


class LogPump:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.kept = 0
        self.dropped = 0
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.truncation_noted = False

    def start(self, pipes: dict[str, int]) -> None:
        """Read these pipes (stream name -> read end) until each reaches end of file, in one thread."""
        t = threading.Thread(target=self._read, args=(dict(pipes),), daemon=True, name="log-reader")
        t.start()
        self.threads.append(t)

    def _read(self, pipes: dict[str, int]) -> None:
        poller = select.poll()
        by_fd = {fd: stream for stream, fd in pipes.items()}
        rank = {fd: ORDER.index(s) if s in ORDER else len(ORDER) for fd, s in by_fd.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while by_fd:
                for fd, _event in sorted(poller.poll(), key=lambda fe: rank[fe[0]]):
                    data = os.read(fd, 65536)
                    if data:
                        self.queue.put((by_fd[fd], data))
                    else:
                        poller.unregister(fd)
                        del by_fd[fd]
                        os.close(fd)
        finally:
            for fd in by_fd:
                os.close(fd)

    def join(self, timeout: float) -> None:
        """Wait up to timeout for the reader threads to reach end of file."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def drained(self) -> bool:
        return all(not t.is_alive() for t in self.threads) and self.queue.empty()

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

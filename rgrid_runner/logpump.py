"""Moves a script's stdout/stderr into the database while it runs, bounded and fenced.

Reader threads only read pipes, so a chatty script never blocks on the database; the owner calls
flush() periodically, which is also the lease check: a refused write means "stop, you are fenced".
"""
from __future__ import annotations

import os
import queue
import threading
import time


class LogPump:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.kept = 0
        self.dropped = 0
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.truncation_noted = False

    def attach(self, stream: str, fd: int) -> None:
        t = threading.Thread(target=self._read, args=(stream, fd), daemon=True, name=f"log-{stream}")
        t.start()
        self.threads.append(t)

    def _read(self, stream: str, fd: int) -> None:
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self.queue.put((stream, data))
        finally:
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

"""rgrid_runner.logpump: real pipes in, ordered and bounded chunks out."""
import os
import threading
import time

import pytest

from rgrid_runner.logpump import LogPump


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def _join(pump: LogPump):
    assert pump.join(5)  # every pipe read to its end


def _pipe_with(pump: LogPump, stream: str, parts: list[bytes]) -> None:
    """Attach a real pipe for stream, write parts into it, close it and let the reader finish."""
    r, w = os.pipe()
    pump.start({stream: r})
    for part in parts:
        os.write(w, part)
    os.close(w)
    _join(pump)


NON_UTF8 = b"caf\xe9 \xff\xfe\x00 \xc3\x28 end\n"


def test_chunks_come_back_in_order_and_coalesced_per_stream():
    pump = LogPump(limit_bytes=1 << 20)
    out_parts = [b"line 1\n", NON_UTF8, b"line 3\n"]
    err_parts = [b"warn \x80\x81\n", b"boom\n"]
    _pipe_with(pump, "stdout", out_parts)
    _pipe_with(pump, "stderr", err_parts)
    chunks, truncated = pump.take()
    assert chunks == [("stdout", b"".join(out_parts)), ("stderr", b"".join(err_parts))]
    assert truncated is False
    assert pump.kept == sum(map(len, out_parts + err_parts))
    assert pump.dropped == 0
    assert pump.take() == ([], False)


def test_many_small_writes_are_coalesced_into_one_chunk():
    pump = LogPump(limit_bytes=1 << 20)
    parts = [f"{i}\n".encode() + bytes([i % 256]) for i in range(500)]
    r, w = os.pipe()
    pump.start({"stdout": r})
    for p in parts:
        os.write(w, p)
        if len(p) % 7 == 0:
            time.sleep(0)  # give the reader a chance to see separate reads
    os.close(w)
    _join(pump)
    chunks, _ = pump.take()
    assert chunks == [("stdout", b"".join(parts))]


def test_interleaved_streams_keep_each_stream_in_order():
    pump = LogPump(limit_bytes=1 << 20)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pump.start({"stdout": out_r, "stderr": err_r})
    got: list[tuple[str, bytes]] = []
    for i in range(50):
        os.write(out_w, b"o%d\xff|" % i)
        os.write(err_w, b"e%d\xfe|" % i)
        if i % 10 == 0:
            got += pump.take()[0]
    os.close(out_w)
    os.close(err_w)
    _join(pump)
    got += pump.take()[0]
    by_stream = {s: b"".join(d for st, d in got if st == s) for s in ("stdout", "stderr")}
    assert by_stream["stdout"] == b"".join(b"o%d\xff|" % i for i in range(50))
    assert by_stream["stderr"] == b"".join(b"e%d\xfe|" % i for i in range(50))
    # coalescing: within one take() no two neighbouring chunks are of the same stream
    pump2 = LogPump(1 << 20)
    _pipe_with(pump2, "stdout", [b"a", b"b"])
    chunks, _ = pump2.take()
    assert all(a[0] != b[0] for a, b in zip(chunks, chunks[1:]))


def test_limit_keeps_exactly_the_first_bytes_and_counts_the_rest():
    pump = LogPump(limit_bytes=100)
    data = bytes(range(250))  # includes bytes that are not UTF-8
    _pipe_with(pump, "stdout", [data[:60], data[60:170], data[170:]])
    chunks, newly_truncated = pump.take()
    assert chunks == [("stdout", data[:100])]
    assert pump.kept == 100
    assert pump.dropped == 150
    assert newly_truncated is True
    pump.truncation_noted = True  # what the runner does once it has written the flag

    # Later output is all dropped, and truncation is not announced again.
    _pipe_with(pump, "stderr", [b"x" * 30])
    chunks, newly_truncated = pump.take()
    assert chunks == []
    assert newly_truncated is False
    assert pump.kept == 100 and pump.dropped == 180

    note = pump.truncation_note().decode()
    assert "first 100 bytes" in note
    assert "180 more bytes" in note
    assert "limit 100 bytes" in note
    assert note.startswith("\n[rgrid]") and note.endswith("\n")


def test_truncation_note_numbers_for_250_bytes():
    pump = LogPump(limit_bytes=100)
    _pipe_with(pump, "stdout", [b"\xff" * 250])
    chunks, newly = pump.take()
    assert sum(len(d) for _, d in chunks) == 100 and newly
    assert b"first 100 bytes" in pump.truncation_note()
    assert b"150 more bytes" in pump.truncation_note()


def test_limit_split_across_streams():
    pump = LogPump(limit_bytes=10)
    _pipe_with(pump, "stdout", [b"123456"])
    _pipe_with(pump, "stderr", [b"abcdef"])
    chunks, newly = pump.take()
    assert chunks == [("stdout", b"123456"), ("stderr", b"abcd")]
    assert (pump.kept, pump.dropped, newly) == (10, 2, True)


def test_exactly_at_the_limit_is_not_truncation():
    pump = LogPump(limit_bytes=100)
    _pipe_with(pump, "stdout", [b"z" * 100])
    chunks, newly = pump.take()
    assert chunks == [("stdout", b"z" * 100)]
    assert newly is False and pump.dropped == 0


def test_drained_only_after_writers_close_and_queue_is_taken():
    pump = LogPump(limit_bytes=1000)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pump.start({"stdout": out_r, "stderr": err_r})
    os.write(out_w, b"hello")
    assert _wait(lambda: not pump.queue.empty())
    assert not pump.drained()  # readers still alive
    os.close(out_w)
    assert not pump.drained()  # stderr writer still open
    os.close(err_w)
    _join(pump)
    assert not pump.drained()  # data still queued
    assert pump.take()[0] == [("stdout", b"hello")]
    assert pump.drained()


def test_reader_closes_its_pipe_end():
    pump = LogPump(limit_bytes=10)
    r, w = os.pipe()
    pump.start({"stdout": r})
    os.close(w)
    _join(pump)
    with pytest.raises(OSError):
        os.fstat(r)


def test_a_chatty_writer_never_blocks_on_a_slow_taker():
    pump = LogPump(limit_bytes=1000)
    r, w = os.pipe()
    pump.start({"stdout": r})
    big = b"y" * (4 * 1024 * 1024)  # far more than a pipe buffer

    def writer():
        os.write(w, big)
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "writer blocked although nobody called take()"
    _join(pump)
    chunks, newly = pump.take()
    assert chunks == [("stdout", b"y" * 1000)]
    assert pump.dropped == len(big) - 1000 and newly


def test_stdout_written_just_before_stderr_comes_first():
    """Both pipes hold output when the reader wakes: stdout's, written first here, is taken first."""
    pump = LogPump(limit_bytes=1 << 20)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(out_w, b"out\n")
    os.write(err_w, b"err\n")
    pump.start({"stdout": out_r, "stderr": err_r})
    os.close(out_w)
    os.close(err_w)
    _join(pump)
    assert pump.take()[0] == [("stdout", b"out\n"), ("stderr", b"err\n")]


def test_one_reader_thread_serves_the_pipes_of_many_runs_at_once():
    pumps, writers = [], []
    for i in range(20):
        pump = LogPump(1 << 20)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pump.start({"stdout": out_r, "stderr": err_r})
        pumps.append(pump)
        writers.append((out_w, err_w))
    for i, (out_w, err_w) in enumerate(writers):
        os.write(out_w, b"run %d out\n" % i)
        os.write(err_w, b"run %d err\n" % i)
    assert [t.name for t in threading.enumerate()].count("log-reader") == 1
    for i, (pump, (out_w, err_w)) in enumerate(zip(pumps, writers)):
        assert not pump.drained()  # its pipes are still open
        os.close(out_w)
        os.close(err_w)
        _join(pump)
        assert pump.take()[0] == [("stdout", b"run %d out\n" % i), ("stderr", b"run %d err\n" % i)]
        assert pump.drained()


def test_a_failed_reader_ends_its_runs_pipes_and_the_next_run_gets_a_new_reader(monkeypatch, caplog):
    """The reader is one thread per process: should it ever fail, the runs it read must not wait
    for their pipes forever (a slot lost until the runner restarts)."""
    from rgrid_runner import logpump

    def broken(self, fd):
        raise RuntimeError("a bug in the reader")

    monkeypatch.setattr(logpump._Reader, "_read", broken)
    pump = LogPump(limit_bytes=1000)
    r, w = os.pipe()
    pump.start({"stdout": r})
    os.write(w, b"lost")
    assert pump.join(5)  # ended, not waited for
    os.close(w)
    monkeypatch.undo()
    after = LogPump(limit_bytes=1000)
    _pipe_with(after, "stdout", [b"read again\n"])
    assert after.take()[0] == [("stdout", b"read again\n")]

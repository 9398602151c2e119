"""The CLI's reading of a follow stream (rgrid/sse.py): whole events only, and after a dropped
connection or a stream that ended early, a reconnect with Last-Event-ID = the last id received,
so no event is lost or repeated; errors with a sentence are raised at once."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from rgrid.client import ApiError, Client
from rgrid.sse import parse


def event(name: str, event_id: int, data: dict) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


def log(event_id: int, text: str) -> bytes:
    return event("log", event_id, {"id": event_id, "attempt": 1, "stream": "stdout",
                                   "data_b64": base64.b64encode(text.encode()).decode()})


class Cut(httpx.SyncByteStream):
    """A response body that sends `parts`, then breaks (a connection dropped) unless clean."""

    def __init__(self, parts: list[bytes], clean: bool = False):
        self.parts, self.clean = parts, clean

    def __iter__(self):
        yield from self.parts
        if not self.clean:
            raise httpx.ReadError("connection reset by peer")


def client_with(answers: list) -> tuple[Client, list]:
    """A Client whose requests get `answers` in turn; returns it and the Last-Event-ID each request sent."""
    sent: list = []
    answers = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("last-event-id"))
        return next(answers)

    c = Client("http://api.test", "key", retry_seconds=5)
    c.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handle))
    return c, sent


def texts(events) -> list[str]:
    return [base64.b64decode(e.data["data_b64"]).decode() for e in events if e.name == "log"]


def test_a_dropped_stream_resumes_after_the_last_whole_event():
    half = log(3, "three\n")[:20]  # cut inside event 3: it must not be seen, and is sent again
    c, sent = client_with([
        httpx.Response(200, stream=Cut([event("status", 0, {"status": "running"}), log(1, "one\n"), log(2, "two\n"),
                                        half])),
        httpx.Response(503, json={"detail": "The database is not reachable right now."}),  # retried
        httpx.Response(200, stream=Cut([log(3, "three\n"), b": still here\n\n"], clean=True)),  # ended early
        httpx.Response(200, stream=Cut([log(4, "four\n"), event("end", 4, {"status": "succeeded", "exit_code": 0})])),
    ])
    events = list(c.events("/v1/executions/ex-1/follow"))
    assert texts(events) == ["one\n", "two\n", "three\n", "four\n"]
    assert events[-1].name == "end" and events[-1].data["exit_code"] == 0
    assert sent == [None, "2", "2", "3"]


def test_a_refusal_with_a_sentence_is_raised_at_once():
    c, sent = client_with([httpx.Response(404, json={"detail": "No execution 'ex-9' for this API key."})])
    with pytest.raises(ApiError) as info:
        list(c.events("/v1/executions/ex-9/follow"))
    assert str(info.value) == "No execution 'ex-9' for this API key." and info.value.status == 404
    assert sent == [None]


def test_a_stream_that_keeps_breaking_before_any_event_gives_up_with_a_sentence():
    c, sent = client_with([httpx.Response(200, stream=Cut([b": hi\n\n"])) for _ in range(30)])
    with pytest.raises(ApiError) as info:
        list(c.events("/v1/executions/ex-1/follow"))
    assert "keeps closing the stream" in str(info.value)
    assert len(sent) == 20


def test_parse_reads_the_event_stream_format():
    lines = ["id: 7", "event: log", "data: {\"a\":", "data: 1}", "", ": comment", "", "event: end", "data: {}", ""]
    parsed = list(parse(iter(lines)))
    assert [(e.name, e.id, e.data) for e in parsed] == [("log", "7", {"a": 1}), ("end", None, {})]
    assert list(parse(iter(["id: 1", "event: log", "data: {}"]))) == []  # no blank line: not a whole event

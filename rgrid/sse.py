"""Reading the API's Server-Sent Events (the follow streams), resuming from the last event id
after a dropped connection: Client.events."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import httpx

if TYPE_CHECKING:
    from .client import Client

# Reconnects in a row that brought no event at all before we give up (a stream that keeps breaking).
BARREN_RECONNECTS = 20


@dataclass
class Event:
    name: str
    id: str | None
    data: dict


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from the stream's lines (the text/event-stream format: `field: value` lines, a blank
    line ends an event, `:` lines are comments). Only whole events are yielded: an event cut off by
    a dropped connection never is."""
    name, event_id, data = "message", None, []
    for line in lines:
        if not line:
            if data:
                yield Event(name, event_id, json.loads("\n".join(data)))
            name, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data.append(value)


def follow_stream(client: "Client", path: str, params: dict) -> Iterator[Event]:
    from rgrid_core.retry import retrying

    from .client import ApiError, _transient

    params = {k: v for k, v in params.items() if v is not None}
    last_id: str | None = None
    barren = 0
    while True:
        def open_stream():
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            request = client.http.build_request("GET", path, params=params, headers=headers)
            try:
                resp = client.http.send(request, stream=True)
            except httpx.TransportError as e:
                raise ApiError(f"Cannot reach the RGrid API at {client.api_url} ({e.__class__.__name__}). "
                               "Check that it is running (`rgrid local status`) or your network connection.") from e
            if resp.status_code >= 400:
                resp.read()
                resp.close()
                try:
                    detail = resp.json().get("detail")
                except ValueError:
                    detail = None
                raise ApiError(detail if isinstance(detail, str) else f"The API answered {resp.status_code}.",
                               resp.status_code)
            return resp

        resp = retrying(open_stream, seconds=client.retry_seconds, when=_transient)
        got = False
        try:
            for event in parse(resp.iter_lines()):
                got = True
                if event.id is not None:
                    last_id = event.id
                yield event
                if event.name == "end":
                    return
        except httpx.TransportError:
            pass  # dropped mid-stream: resume from last_id
        finally:
            resp.close()
        barren = 0 if got else barren + 1
        if barren >= BARREN_RECONNECTS:
            raise ApiError(f"The RGrid API at {client.api_url} keeps closing the stream of {path} before sending "
                           "anything. Try again later, or look at the run with `rgrid status ID`.")

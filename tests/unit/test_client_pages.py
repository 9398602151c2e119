"""The CLI's client reads a list's page and the cursor of the next one from the X-Next-Cursor
header, sends the cursor back as given, and a refused cursor reaches the person as its sentence."""
from __future__ import annotations

import httpx
import pytest

from rgrid.client import ApiError, Client

REFUSED = ("The cursor 'x' is not one this API gives out. Pass the X-Next-Cursor header of the previous page as "
           "it came, or leave cursor out to start from the newest.")


def client(answer) -> Client:
    c = Client("http://api.test", "rg_key", retry_seconds=0)
    c.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    return c


def test_a_page_comes_with_the_next_cursor_and_the_last_page_without():
    asked = []

    def answer(request):
        asked.append(dict(request.url.params))
        if "cursor" in request.url.params:
            return httpx.Response(200, json=[{"id": "ex-1"}])
        return httpx.Response(200, json=[{"id": "ex-3"}, {"id": "ex-2"}], headers={"X-Next-Cursor": "2"})

    c = client(answer)
    assert c.get_page("/v1/executions", status="failed", limit=2) == ([{"id": "ex-3"}, {"id": "ex-2"}], "2")
    assert c.get_page("/v1/executions", status="failed", limit=2, cursor="2") == ([{"id": "ex-1"}], None)
    assert asked == [{"status": "failed", "limit": "2"}, {"status": "failed", "limit": "2", "cursor": "2"}]


def test_a_refused_cursor_is_its_sentence():
    c = client(lambda request: httpx.Response(400, json={"detail": REFUSED}))
    with pytest.raises(ApiError) as e:
        c.get_page("/v1/executions", cursor="x")
    assert str(e.value) == REFUSED and e.value.status == 400

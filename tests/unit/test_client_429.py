"""A 429 (over a quota) reaches the person as its sentence at once: the CLI's client never
retries it, for a create (POST) or a read (GET)."""
from __future__ import annotations

import httpx
import pytest

from rgrid.client import ApiError, Client

SENTENCE = ("Over your quota of 3 queued runs: you have 3 uploading or queued, and this run would make 4. "
            "Nothing was created; wait for some to finish (or cancel some) and try again, or ask the operator "
            "for a higher quota.")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_429_is_shown_once_and_not_retried(method):
    calls = []

    def answer(request):
        calls.append(request)
        return httpx.Response(429, json={"detail": SENTENCE})

    c = Client("http://api.test", "rg_key", retry_seconds=30)
    c.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    with pytest.raises(ApiError) as e:
        c.get("/v1/executions") if method == "GET" else c.post("/v1/executions", json={})
    assert str(e.value) == SENTENCE and e.value.status == 429
    assert len(calls) == 1

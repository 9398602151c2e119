"""A small HTTP client for the /v1 API that turns every failure into a sentence."""
from __future__ import annotations

import httpx

NEXT_CURSOR = "X-Next-Cursor"  # a list's header: the cursor of its next page


class ApiError(Exception):
    """An error a person can act on; str() is the sentence to show."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, api_url: str, api_key: str, timeout: float = 30.0, retry_seconds: float = 60.0):
        self.api_url = api_url
        self.retry_seconds = retry_seconds
        self.http = httpx.Client(
            base_url=api_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=timeout,
        )

    def request(self, method: str, path: str, **kwargs):
        return self.send(method, path, **kwargs).json()

    def send(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The answer to a request, headers and all; every failure an ApiError with a sentence."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ApiError(
                f"Cannot reach the RGrid API at {self.api_url} ({e.__class__.__name__}). "
                "Check that it is running (`rgrid local status`) or your network connection."
            ) from e
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = None
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            raise ApiError(detail or f"The API answered {resp.status_code}.", resp.status_code)
        return resp

    def get(self, path: str, **params):
        return self.get_response(path, **params).json()

    def get_page(self, path: str, **params) -> tuple[list, str | None]:
        """A page of a list (GET /v1/executions) and the cursor of the next one (None: the last)."""
        resp = self.get_response(path, **params)
        return resp.json(), resp.headers.get(NEXT_CURSOR)

    def get_response(self, path: str, **params) -> httpx.Response:
        """GETs are safe to repeat: ride out an API restart or a database blip for a while."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            return self.send("GET", path, params=params)
        except ApiError as e:
            if not _transient(e):
                raise
        from rgrid_core.retry import retrying  # tenacity is imported only once a request has failed

        return retrying(lambda: self.send("GET", path, params=params), seconds=self.retry_seconds,
                        when=_transient)

    def post(self, path: str, json=None, timeout: float | None = None):
        """A POST, never retried; `timeout` (seconds) bounds each phase of it instead of the client's."""
        return self.request("POST", path, json=json, **({"timeout": timeout} if timeout is not None else {}))

    def events(self, path: str, **params):
        """Follow a Server-Sent Events stream of the API (GET /v1/executions/{id}/follow and the
        like): yields Event(name, id, data) for each event, reconnecting when the connection drops
        or the stream ends without an `end` event, with `Last-Event-ID` set to the last id received,
        so the stream resumes where it broke: no event after that id is lost, none comes twice. The
        last `end` event is yielded, then it returns. Opening the stream rides out an API restart
        for retry_seconds, as get() does; an error with a sentence (404, 401…) is raised at once."""
        from .sse import follow_stream  # only commands that follow a run import it

        return follow_stream(self, path, params)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status in (None, 502, 503, 504)

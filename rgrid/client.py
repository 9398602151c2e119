"""A small HTTP client for the /v1 API that turns every failure into a sentence."""
from __future__ import annotations

import httpx


class ApiError(Exception):
    """An error a person can act on; str() is the sentence to show."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, api_url: str, api_key: str, timeout: float = 30.0):
        self.api_url = api_url
        self.http = httpx.Client(
            base_url=api_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=timeout,
        )

    def request(self, method: str, path: str, **kwargs):
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
        return resp.json()

    def get(self, path: str, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json=None):
        return self.request("POST", path, json=json)

"""A worker's presigned URLs expire soon, its output PUTs sooner (rgrid_service.storage); signing
is local, so no store is needed."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from rgrid_service.settings import ServiceSettings
from rgrid_service.storage import ObjectStore


def _expires(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


def test_output_puts_expire_sooner_than_input_gets():
    store = ObjectStore(ServiceSettings(s3_endpoint="127.0.0.1:9", s3_worker_endpoint="127.0.0.1:9"))
    assert _expires(store.presign_worker_get("executions/ex1/inputs/a")) == 900
    assert _expires(store.presign_worker_put("executions/ex1/outputs/a1/o")) == 300
    short = ObjectStore(ServiceSettings(s3_endpoint="127.0.0.1:9", worker_output_presign_expiry_seconds=60))
    assert _expires(short.presign_worker_put("executions/ex1/outputs/a1/o")) == 60

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


def test_a_recent_input_url_is_handed_out_again_and_a_fresh_one_is_signed_anew(monkeypatch):
    import rgrid_service.storage as storage

    clock = [1000.0]
    monkeypatch.setattr(storage.time, "monotonic", lambda: clock[0])
    store = ObjectStore(ServiceSettings(s3_endpoint="127.0.0.1:9", worker_presign_expiry_seconds=900))
    signed: list[str] = []
    sign = store.worker_presigner.presigned_get_object

    def counting(bucket, key, expires):
        signed.append(key)
        return sign(bucket, key, expires=expires)

    monkeypatch.setattr(store.worker_presigner, "presigned_get_object", counting)
    first = store.presign_worker_get("blobs/t/abc")
    clock[0] += 44  # under a twentieth of 900 s: the same URL, not signed again
    assert store.presign_worker_get("blobs/t/abc") == first and signed == ["blobs/t/abc"]
    assert store.presign_worker_get("blobs/t/other") != first  # another object: its own URL
    store.presign_worker_get("blobs/t/abc", fresh=True)  # a worker whose URL expired gets a new signature
    assert signed == ["blobs/t/abc", "blobs/t/other", "blobs/t/abc"]
    clock[0] += 46  # 46 s after the fresh one: past a twentieth, signed anew
    store.presign_worker_get("blobs/t/abc")
    assert len(signed) == 4

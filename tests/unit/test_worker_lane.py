"""Claim, renew and finish answer the same through the worker lane (api/workerlane.py) as through
FastAPI's routes: the same requests, in the same order, to an app without the lane and to one with
it (each on its own SQLite file holding the same runs), get the same status, headers and bytes.
The lane serves the plain requests a worker sends, and hands everything else to FastAPI. No store
is needed: the presigned GETs are made up (signing is not what is compared here), and deleting a
refused attempt's outputs is only noted."""
from __future__ import annotations

import base64
import pytest
from fastapi.testclient import TestClient
from starlette.middleware import Middleware
from sqlalchemy import insert, update

from rgrid_core import workerwire as wire
from rgrid_service import lifecycle
from rgrid_service.api.app import create_app
from rgrid_service.api.workerlane import WorkerLane
from rgrid_service.db.models import Execution, Tenant, Worker
from rgrid_service.db.session import engine_for, upgrade_schema
from rgrid_service.fleet import records
from rgrid_service.secrets import keys_for
from rgrid_service.settings import ServiceSettings
from rgrid_service.storage import ObjectStore

SECRET = "lane-test-secret-" + "x" * 32
RUNS = ("ex-one", "ex-two", "ex-three", "ex-elsewhere")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plane(tmp_path, name: str, lane: bool):
    """An app on its own SQLite file with the same worker (w-1, active) and runs; the first three
    dispatched to it. With lane=False the lane is taken out before the app is first called."""
    url = f"sqlite:///{tmp_path / name}.db"
    upgrade_schema(url)
    settings = ServiceSettings(_env_file=None, database_url=url, s3_endpoint="127.0.0.1:9", secret_key=SECRET)
    app = create_app(settings)
    if not lane:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not WorkerLane]
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id="tenant-a", name="tenant-a"))
        for run in RUNS:
            conn.execute(insert(Execution).values(
                id=run, tenant_id="tenant-a", status="queued", script="job.py", args=["--n", "3"], env={"A": "1"},
                runtime="python:3.11", timeout_seconds=60,
                inputs=[{"name": "job.py", "sha256": "0" * 64, "size": 5, "object_key": "blobs/t/" + "0" * 64}]))
    (worker_id,) = records.request_workers(engine, 1, "local", "local", "local", 2)
    assert lifecycle.register_worker(engine, worker_id, "local", 2, None)
    lifecycle.mark_dispatched(engine, [(run, worker_id) for run in RUNS[:3]])
    return app, engine, keys_for(settings).worker_token(worker_id)


class Beyond:
    """Inside the lane (the innermost middleware): records the path of every request the lane
    handed on to FastAPI."""

    def __init__(self, app, seen: list):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def pair(tmp_path, monkeypatch):
    monkeypatch.setattr(ObjectStore, "presign_worker_get", lambda self, key, fresh=False: f"http://store/{key}")
    monkeypatch.setattr(ObjectStore, "delete_prefix", lambda self, prefix: deleted.append(prefix))
    deleted: list[str] = []
    routed: list[str] = []
    sides = []
    for name, lane in (("fastapi", False), ("lane", True)):
        app, engine, token = plane(tmp_path, name, lane)
        if lane:
            app.user_middleware.append(Middleware(Beyond, seen=routed))
        sides.append((TestClient(app), engine, token))
    yield sides, routed
    assert len(deleted) % 2 == 0 and deleted[::2] == deleted[1::2]  # a refused attempt's outputs: on both alike
    for client, engine, _ in sides:
        client.close()
        engine.dispose()


def both(sides, method: str, path: str, auth: str | None = "token", headers: dict | None = None, **kw):
    """The same request to both apps (auth: "token" for the worker's token, None for no
    Authorization header, else the header as given); asserts they answer alike, returns the answer."""
    answers = []
    for client, _, token in sides:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = f"Bearer {token}" if auth == "token" else auth
        answers.append(client.request(method, path, headers=sent, **kw))
    plain, lane = answers
    assert (lane.status_code, lane.content) == (plain.status_code, plain.content), (path, plain.text, lane.text)
    assert dict(lane.headers.items()) == dict(plain.headers.items()), path
    return plain


def test_the_lane_answers_every_request_as_fastapi_does_and_serves_the_plain_ones(pair):
    sides, routed = pair
    claim, renew, finish = wire.CLAIM.format(id="ex-one"), wire.RENEW.format(id="ex-one", attempt=1), \
        wire.FINISH.format(id="ex-one", attempt=1)

    first = both(sides, "POST", claim)
    assert first.status_code == 200 and first.json()["attempt"] == 1 and first.json()["env"] == {"A": "1"}
    assert both(sides, "POST", claim).json() == first.json()  # its answer lost: asked again, answered again
    assert both(sides, "POST", renew, json={"logs": [{"stream": "stdout", "data_b64": b64(b"hi\n")}],
                                            "stages": {"running": 0.5}}).json() == {"kept": True}
    assert both(sides, "POST", renew, json={"logs": [{"stream": "stdout", "data_b64": "not base64!"}]}).status_code == 400
    assert both(sides, "POST", wire.FINISH.format(id="ex-one", attempt=2), json={"status": "succeeded"}).status_code == 403
    assert both(sides, "POST", wire.CLAIM.format(id="ex-elsewhere")).status_code == 403  # not dispatched to it
    assert both(sides, "POST", wire.CLAIM.format(id="ex-nowhere")).status_code == 404
    assert both(sides, "POST", claim, auth="Bearer rgw_w-1.0000").status_code == 401  # a forged token
    assert both(sides, "POST", claim, auth="Bearer an-api-key").status_code == 401
    assert routed == []  # all of them served by the lane

    # Not as a worker sends them: the lane hands them on (the body it read too), FastAPI answers.
    json_type = {"Content-Type": "application/json"}
    handed_on = [
        (finish, both(sides, "POST", finish, json={"exit_code": 0})),  # no status: FastAPI's 422 sentence
        (finish, both(sides, "POST", finish, content=b"{not json", headers=json_type)),
        (finish, both(sides, "POST", finish, content=b'{"status": "succeeded"}', headers={"Content-Type": "text/plain"})),
        (finish, both(sides, "POST", finish, content=b"\xff\xfe", headers=json_type)),
        (big := wire.FINISH.format(id="ex-one", attempt=2**31), both(sides, "POST", big, json={"status": "succeeded"})),
        (claim, both(sides, "POST", claim, auth=None)),
        (claim, both(sides, "POST", claim, auth="Basic abc")),
        (claim, both(sides, "GET", claim)),  # another method
    ]
    assert [r.status_code for _, r in handed_on] == [422, 422, 422, 422, 422, 401, 401, 405]
    assert routed == [path for path, _ in handed_on]
    routed.clear()

    done = both(sides, "POST", finish, json={"status": "succeeded", "exit_code": 0, "stages": {"running": 0.2},
                                             "logs": [{"stream": "stdout", "data_b64": b64(b"bye\n")}]})
    assert done.json() == {"committed": True}
    assert both(sides, "POST", finish, json={"status": "succeeded", "exit_code": 0}).json() == {"committed": True}
    assert both(sides, "POST", finish, json={"status": "failed", "exit_code": 1}).status_code == 409
    assert routed == []


def test_a_revoked_workers_token_is_refused_at_once_through_the_lane(pair):
    sides, routed = pair
    both(sides, "POST", wire.CLAIM.format(id="ex-two"))
    for _, engine, _ in sides:
        with engine.begin() as conn:
            conn.execute(update(Worker).values(token_revoked_at=lifecycle.utcnow()))
    refused = both(sides, "POST", wire.CLAIM.format(id="ex-three"))
    assert refused.status_code == 403 and refused.json()["code"] == wire.GIVEN_UP
    late = both(sides, "POST", wire.FINISH.format(id="ex-two", attempt=1), json={"status": "succeeded"})
    assert late.status_code == 403 and late.json()["code"] == wire.GIVEN_UP
    assert routed == []

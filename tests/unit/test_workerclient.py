"""rgrid_runner.workerclient over real HTTP: statuses, retries through an outage, presigned
transfers with their sha256, and one kept-alive connection.

The server is tests/httpstandin's scripted HTTP/1.1 server on 127.0.0.1, standing in for the API
and the store; the real API and SeaweedFS are exercised by tests/integration.
"""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from rgrid_core import workerwire as wire
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import ChecksumMismatch, Refused, Unreachable, WorkerClient
from tests.httpstandin import server  # noqa: F401 - the fixture

TOKEN = "rgw_test-token"


@pytest.fixture
def client(server):
    c = WorkerClient(server.url, TOKEN, outage_budget=5.0, timeout=5.0)
    yield c
    c.close()


CLAIM = dict(attempt=2, script="print(1)", args=["a"], env={"K": "v"}, runtime="python3", timeout_seconds=60,
             inputs=[dict(name="in.txt", kind="file", sha256="0" * 64, size=3, url="http://x/y")])


def test_claim_sends_the_token_and_reads_the_spec(server, client):
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, CLAIM))
    claimed = client.claim("ex1")
    assert claimed.attempt == 2 and claimed.inputs[0].name == "in.txt" and claimed.env == {"K": "v"}
    assert server.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_a_claim_answered_409_is_not_claimed(server, client):
    server.answer("POST", wire.CLAIM.format(id="ex1"), (409, {"detail": "It is not queued any more."}))
    assert client.claim("ex1") is None


def test_503_and_502_are_ridden_out_then_the_answer_counts(server, client):
    path = wire.RENEW.format(id="ex1", attempt=1)
    server.answer("POST", path, (503, {"detail": "The database is away; try again."}), (502, b"bad gateway"),
                  (200, {"kept": True}))
    assert client.renew("ex1", 1, [("stdout", b"hello\n")], stages={"running": 0.5}) is True
    sent = server.requests("POST", path)
    assert len(sent) == 3
    body = json.loads(sent[-1]["body"])
    assert body["logs"] == [{"stream": "stdout", "data_b64": "aGVsbG8K"}]
    assert body["stages"] == {"running": 0.5} and body["truncated"] is False


def test_fenced_renew_and_finish_are_false(server, client):
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (409, {"detail": "fenced"}))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (409, {"detail": "fenced"}))
    assert client.renew("ex1", 1) is False
    assert client.finish("ex1", 1, wire.FinishRequest(status="succeeded", exit_code=0)) is False


def test_a_refusal_carries_the_servers_sentence(server, client):
    sentence = "Worker w-1 is dead; it must come back under a new id."
    server.answer("POST", wire.HEARTBEAT, (403, {"detail": sentence}), (403, {"detail": sentence, "code": wire.GIVEN_UP}))
    with pytest.raises(Refused) as err:
        client.heartbeat()
    assert str(err.value) == sentence and err.value.status == 403 and not err.value.given_up
    with pytest.raises(Refused) as err:
        client.heartbeat()
    assert err.value.given_up
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (403, {"detail": sentence}))
    assert client.renew("ex1", 1) is False  # a refused renew stops the run like a fenced one


def test_finish_is_asked_again_after_a_lost_answer(server, client):
    path = wire.FINISH.format(id="ex1", attempt=3)
    server.answer("POST", path, (504, b"gateway timeout"), (200, {"committed": True}))
    request = wire.FinishRequest(status="failed", exit_code=2, reason="The script exited with code 2.",
                                 outputs=[wire.CommittedOutput(path="o.txt", size=1, sha256="a" * 64)])
    assert client.finish("ex1", 3, request) is True
    bodies = [json.loads(r["body"]) for r in server.requests("POST", path)]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[0]["outputs"] == [{"path": "o.txt", "size": 1, "sha256": "a" * 64}]


def test_an_api_away_for_the_whole_budget_is_unreachable():
    client = WorkerClient("http://127.0.0.1:9", TOKEN, outage_budget=1.0)
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        client.heartbeat(budget=1.0)
    assert time.monotonic() - started >= 1.0
    assert "could not be reached" in str(err.value)
    with pytest.raises(Unreachable):
        client.renew("ex1", 1, budget=0.3)


def test_calls_share_one_kept_alive_connection(server, client):
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (200, {"kept": True}))
    server.answer("POST", wire.HEARTBEAT, (200, {"worker_id": "w-1", "running": ["ex1"]}))
    for _ in range(5):
        assert client.renew("ex1", 1)
        assert client.heartbeat().running == ["ex1"]
    assert len({r["port"] for r in server.seen}) == 1


def test_proxy_variables_are_ignored(server, client, monkeypatch):
    """A Ray process's environment points HTTP proxies at a closed port (rgrid_service.raynet)."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    fresh = WorkerClient(server.url, TOKEN, outage_budget=1.0)
    server.answer("POST", wire.HEARTBEAT, (200, {"worker_id": "w-1", "running": []}))
    assert fresh.heartbeat().worker_id == "w-1"


def test_input_paths_quote_the_name(server, client):
    path = wire.INPUT_URL.format(id="ex1", attempt=1, name="my%20data.csv")
    server.answer("GET", path, (200, dict(name="my data.csv", sha256="0" * 64, size=1, url="http://new")))
    assert client.input_url("ex1", 1, "my data.csv") == "http://new"


def test_download_checks_the_sha256(server, client, tmp_path):
    data = b"payload " * 100000
    server.objects["/blob"] = data
    dest = tmp_path / "in.bin"
    client.download(server.url + "/blob", dest, hashlib.sha256(data).hexdigest(), "in.bin")
    assert dest.read_bytes() == data
    with pytest.raises(ChecksumMismatch) as err:
        client.download(server.url + "/blob", dest, "f" * 64, "in.bin")
    assert err.value.name == "in.bin"


def test_an_expired_download_url_is_exchanged_once_for_a_fresh_one(server, client, tmp_path):
    data = b"fresh"
    server.answer("GET", "/old", (403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"))
    server.objects["/new"] = data
    asked = []

    def fresh():
        asked.append(1)
        return server.url + "/new"

    client.download(server.url + "/old", tmp_path / "f", hashlib.sha256(data).hexdigest(), "f", fresh_url=fresh)
    assert asked == [1] and (tmp_path / "f").read_bytes() == data
    # A fresh URL refused too is a real refusal, not asked for forever.
    server.answer("GET", "/denied", (403, b"AccessDenied"))
    with pytest.raises(RuntimeError, match="HTTP 403"):
        client.download(server.url + "/old", tmp_path / "g", "0" * 64, "g", fresh_url=lambda: server.url + "/denied")


def test_a_store_outage_during_a_download_is_ridden_out(server, client, tmp_path):
    data = b"x" * 10
    server.answer("GET", "/b", (503, b"SlowDown"), (500, b"InternalError"), (200, data))
    client.download(server.url + "/b", tmp_path / "b", hashlib.sha256(data).hexdigest(), "b")
    assert (tmp_path / "b").read_bytes() == data


def test_upload_streams_the_file_with_its_length_and_returns_its_sha256(server, client, tmp_path):
    data = bytes(range(256)) * 9000
    path = tmp_path / "out.bin"
    path.write_bytes(data)
    server.answer("PUT", "/o", (503, b"SlowDown"))
    server.answer("PUT", "/o", (200, b""))
    assert client.upload(server.url + "/o", path) == (len(data), hashlib.sha256(data).hexdigest())
    puts = server.requests("PUT", "/o")
    assert len(puts) == 2
    assert all(p["headers"]["Content-Length"] == str(len(data)) and p["body"] == data for p in puts)
    assert all("Authorization" not in p["headers"] for p in puts)  # the token never goes to the store


def test_upload_refuses_to_follow_a_symlink(server, client, tmp_path):
    (tmp_path / "secret").write_bytes(b"not yours")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        client.upload(server.url + "/o", tmp_path / "link")
    assert server.requests("PUT", "/o") == []


def test_output_urls_asks_once_for_all_files(server, client):
    path = wire.OUTPUT_URLS.format(id="ex1", attempt=1)
    server.answer("POST", path, (200, {"urls": [{"path": "a.txt", "url": "http://a"}, {"path": "d/b.txt", "url": "http://b"}]}))
    assert client.output_urls("ex1", 1, [("a.txt", 1), ("d/b.txt", 2)]) == {"a.txt": "http://a", "d/b.txt": "http://b"}
    assert json.loads(server.requests("POST", path)[0]["body"]) == {
        "files": [{"path": "a.txt", "size": 1}, {"path": "d/b.txt", "size": 2}]}


def test_an_unreachable_api_is_ridden_out_only_for_the_shorter_budget(server):
    """No answer / 502 / 504 (the API itself away: the orchestrator counts the silence) is given up
    after the unreachable budget; 503 (the database away, nothing expires) gets the outage budget."""
    c = WorkerClient(server.url, TOKEN, outage_budget=30.0, unreachable_budget=0.3)
    try:
        server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (502, b"bad gateway"))
        with pytest.raises(Unreachable):
            c.renew("ex1", 1)
        assert len(server.requests("POST", wire.RENEW.format(id="ex1", attempt=1))) <= 3  # not 30 s of them
        away = (503, {"detail": "The database is away."})
        server.answer("POST", wire.RENEW.format(id="ex2", attempt=1), away, away, away, away, (200, {"kept": True}))
        assert c.renew("ex2", 1) is True  # ~3 s of 503s, far past the 0.3 s budget for silence
    finally:
        c.close()
    closed = WorkerClient("http://127.0.0.1:9", TOKEN, outage_budget=30.0, unreachable_budget=0.3)
    with pytest.raises(Unreachable):
        closed.heartbeat(budget=None)
    closed.close()


def test_the_unreachable_budget_stays_below_dead_after():
    assert WorkerSettings(dead_after_seconds=120).unreachable_budget == 60
    assert WorkerSettings(dead_after_seconds=120, api_unreachable_budget_seconds=5).unreachable_budget == 5


def test_settings_outage_budget_defaults_to_three_dead_afters():
    assert WorkerSettings(dead_after_seconds=120).outage_budget == 360
    assert WorkerSettings(dead_after_seconds=4).outage_budget == 30
    assert WorkerSettings(dead_after_seconds=120, api_outage_budget_seconds=7).outage_budget == 7


def test_lease_keeper_renews_during_a_long_transfer_and_stops_after(server, client):
    from rgrid_runner.runner import Lease, LeaseKeeper

    settings = WorkerSettings(lease_check_interval_seconds=0.2)
    lease, other = Lease("ex1", 1), Lease("ex2", 1)
    for l in (lease, other):
        server.answer("POST", wire.RENEW.format(id=l.execution_id, attempt=1), (200, {"kept": True}))
    renews = lambda l: len(server.requests("POST", wire.RENEW.format(id=l.execution_id, attempt=1)))  # noqa: E731
    with LeaseKeeper(client, lease, settings), LeaseKeeper(client, other, settings):
        time.sleep(1.5)  # "a slow upload": the shared keeper thread renews both meanwhile
        assert renews(lease) >= 3 and renews(other) >= 3
    time.sleep(0.6)  # let a renew already under way land
    after = renews(lease)
    time.sleep(1.0)
    assert renews(lease) == after  # no longer kept


def test_lease_keeper_drops_a_fenced_lease(server, client):
    from rgrid_runner.runner import Lease, LeaseKeeper

    lease = Lease("ex3", 2)
    server.answer("POST", wire.RENEW.format(id="ex3", attempt=2), (409, {"detail": "Run ex3 was canceled."}))
    with LeaseKeeper(client, lease, WorkerSettings(lease_check_interval_seconds=0.2)):
        time.sleep(1.0)
        assert lease not in LeaseKeeper._held  # the refused renew ended the keeping
    assert len(server.requests("POST", wire.RENEW.format(id="ex3", attempt=2))) == 1


def test_the_agent_registers_beats_and_takes_the_worker_down_when_given_up(server, client, monkeypatch):
    from rgrid_runner import agent

    monkeypatch.setenv("RGRID_AGENT_KILLS_GROUP", "0")  # not this test's process group
    server.answer("POST", wire.REGISTER, (503, {"detail": "The database is away."}),
                  (200, {"worker_id": "w-1", "heartbeat_interval_seconds": 0.05}))
    server.answer("POST", wire.HEARTBEAT, (200, {"worker_id": "w-1", "running": []}),
                  (409, {"detail": "Worker w-1 has not registered yet: register first."}),
                  (200, {"worker_id": "w-1", "running": []}),
                  (403, {"detail": "Worker w-1 was declared dead.", "code": wire.GIVEN_UP}))
    with pytest.raises(SystemExit) as exit_:
        agent.run(2, "local", WorkerSettings(), client)
    assert exit_.value.code == 3
    assert json.loads(server.requests("POST", wire.REGISTER)[0]["body"]) == {"slots": 2, "provider": "local", "docker": False,
                                                                             "images": []}
    assert len(server.requests("POST", wire.REGISTER)) == 3  # the 503 ridden out, then again after the 409
    assert len(server.requests("POST", wire.HEARTBEAT)) == 4

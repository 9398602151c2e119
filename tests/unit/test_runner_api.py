"""rgrid_runner.runner end to end over HTTP: claim, stage through a presigned GET, run in the real
sandbox, upload through presigned PUTs, finish; and what it does when fenced or handed a damaged
input. tests/httpstandin stands in for the API and the store (the real ones: tests/integration)."""
from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from rgrid_core import workerwire as wire
from rgrid_runner.runner import run_execution
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import WorkerClient
from tests.httpstandin import server  # noqa: F401 - the fixture
from tests.unit.test_sandbox import need_bwrap

SCRIPT = b"""import os, sys
data = open("in.txt").read()
os.makedirs("out", exist_ok=True)
open("out/result.txt", "w").write(data.upper())
print("read", len(data), "bytes")
print("to stderr", file=sys.stderr)
"""
DATA = b"hello worker api\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def work_root():
    # Not pytest's tmp_path: the sandbox's own uid must reach the run folder (its parents are 0700).
    with tempfile.TemporaryDirectory(prefix="rgrid-runner-test-", dir="/tmp") as d:
        yield Path(d)


def _grid(server, work_root: Path, stored_input: bytes = DATA):
    server.objects["/blobs/script"] = SCRIPT
    server.objects["/blobs/in"] = stored_input
    claim = dict(attempt=1, script="s.py", args=[], env={"SECRET": "v"}, runtime="python:3.11", timeout_seconds=60,
                 inputs=[dict(name="s.py", sha256=_sha(SCRIPT), size=len(SCRIPT), url=server.url + "/blobs/script"),
                         dict(name="in.txt", sha256=_sha(DATA), size=len(DATA), url=server.url + "/blobs/in")])
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, claim))
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (200, {"kept": True}))
    server.answer("POST", wire.OUTPUT_URLS.format(id="ex1", attempt=1),
                  (200, {"urls": [{"path": "out/result.txt", "url": server.url + "/outputs/a1/out/result.txt"}]}))
    settings = WorkerSettings(work_root=str(work_root), input_cache_mb=0, lease_check_interval_seconds=0.2)
    return WorkerClient(server.url, "rgw_t", outage_budget=3.0), settings


def _finish_body(server) -> dict:
    finishes = server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))
    assert len(finishes) == 1
    return json.loads(finishes[0]["body"])


def _logs(server) -> bytes:
    out = b""
    for r in server.requests("POST", wire.RENEW.format(id="ex1", attempt=1)):
        for chunk in json.loads(r["body"])["logs"]:
            out += base64.b64decode(chunk["data_b64"])
    return out


def test_a_run_goes_through_the_worker_api_and_presigned_urls(server, work_root):
    need_bwrap()
    client, settings = _grid(server, work_root)
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "succeeded"
    assert server.objects["/outputs/a1/out/result.txt"] == DATA.upper()
    body = _finish_body(server)
    assert body["status"] == "succeeded" and body["exit_code"] == 0
    assert body["outputs"] == [{"path": "out/result.txt", "size": len(DATA), "sha256": _sha(DATA.upper())}]
    assert set(body["stages"]) <= {"running", "uploading"} and "uploading" in body["stages"]
    assert b"read 17 bytes" in _logs(server) and b"to stderr" in _logs(server)
    # One kept-alive connection to the API and the store (the same server here) for the whole run.
    assert len({r["port"] for r in server.seen if r["method"] == "POST"}) == 1
    assert list(work_root.iterdir()) == []  # the run's folder is gone


def test_a_fenced_finish_commits_nothing_and_deletes_nothing(server, work_root):
    need_bwrap()
    client, settings = _grid(server, work_root)
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (409, {"detail": "Run ex1 was canceled."}))
    assert run_execution("ex1", client, settings) == "fenced"
    assert {r["method"] for r in server.seen} <= {"GET", "POST", "PUT"}  # the API deletes, never the worker


def test_a_damaged_input_is_reported_and_the_run_fails_with_a_sentence(server, work_root):
    client, settings = _grid(server, work_root, stored_input=b"bit rot")
    server.answer("POST", wire.DAMAGED_INPUT.format(id="ex1", attempt=1, name="in.txt"), (200, {"forgotten": True}))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "staging-failed"
    assert len(server.requests("POST", wire.DAMAGED_INPUT.format(id="ex1", attempt=1, name="in.txt"))) == 1
    body = _finish_body(server)
    assert body["status"] == "failed"
    assert body["reason"].startswith("An input file's stored copy is damaged (in.txt: expected sha256")
    assert body["reason"].endswith("run it again and it will be uploaded anew.")


def test_a_claim_lost_to_another_runner_does_nothing(server, work_root):
    client, settings = _grid(server, work_root)
    server.answers[("POST", wire.CLAIM.format(id="ex1"))] = [(409, {"detail": "It is not queued any more."})]
    assert run_execution("ex1", client, settings) == "not-claimed"
    assert [r["path"] for r in server.seen] == [wire.CLAIM.format(id="ex1")]


def test_the_timeout_is_enforced_while_a_renew_rides_out_an_outage(server, work_root):
    """The renew carrying the first line blocks on 503s for seconds; the script's 1 s timeout still
    kills it meanwhile (it would have printed "late" and succeeded), and the run is timed_out."""
    need_bwrap()
    client, settings = _grid(server, work_root)
    server.objects["/blobs/script"] = SCRIPT_LATE
    claim = server.answers[("POST", wire.CLAIM.format(id="ex1"))][0][1]
    claim.update(timeout_seconds=1, inputs=[dict(claim["inputs"][0], sha256=_sha(SCRIPT_LATE), size=len(SCRIPT_LATE))])
    away = (503, {"detail": "The database is away."})
    server.answers[("POST", wire.RENEW.format(id="ex1", attempt=1))] = [away] * 5 + [(200, {"kept": True})]
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    client.budget = client.unreachable_budget = 30.0
    assert run_execution("ex1", client, settings) == "timed_out"
    assert _finish_body(server)["status"] == "timed_out"
    assert b"early" in _logs(server) and b"late" not in _logs(server)


SCRIPT_LATE = b"""import time
print("early", flush=True)
time.sleep(3)
print("late", flush=True)
"""


def test_a_finish_answered_400_is_finished_failed_with_the_sentence(server, work_root):
    """Outputs the store does not hold (400): the run is failed now, with the control plane's
    sentence, instead of waiting for its lease to expire."""
    need_bwrap()
    client, settings = _grid(server, work_root)
    sentence = "Output out/result.txt is not in the store (or has another size); upload it again."
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (400, {"detail": sentence}), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "failed"
    first, second = [json.loads(r["body"]) for r in server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))]
    assert first["status"] == "succeeded" and first["outputs"]
    assert second["status"] == "failed" and second["outputs"] == [] and sentence in second["reason"]


def test_a_claim_answer_that_does_not_parse_is_logged_without_its_values(server, work_root, caplog):
    client, settings = _grid(server, work_root)
    server.answers[("POST", wire.CLAIM.format(id="ex1"))] = [(200, {"attempt": 1, "script": "s.py",
                                                                     "env": {"SECRET": {"not": "a string hunter2"}}})]
    result = run_execution("ex1", client, settings)
    assert result.startswith("claim-failed: ValidationError") and "env" in result
    assert "hunter2" not in result and "hunter2" not in caplog.text


PRINTER = b"""import sys
print("to stdout")
print("to stderr", file=sys.stderr)
"""


def _finish_logs(body: dict) -> list[tuple[str, bytes]]:
    return [(c["stream"], base64.b64decode(c["data_b64"])) for c in body["logs"]]


def test_what_a_script_writes_after_the_last_renew_goes_with_the_finish(server, work_root):
    """A short run that prints and writes no file: its output reaches the API with the finish, in
    the same request (no renew of its own). The runner's loop looks only when the script ends here
    (a long flush interval), so everything it wrote is read after its end."""
    need_bwrap()
    client, settings = _grid(server, work_root)
    settings = settings.model_copy(update={"log_flush_interval_seconds": 60.0})
    server.objects["/blobs/script"] = PRINTER
    claim = server.answers[("POST", wire.CLAIM.format(id="ex1"))][0][1]
    claim.update(inputs=[dict(claim["inputs"][0], sha256=_sha(PRINTER), size=len(PRINTER))])
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "succeeded"
    assert _logs(server) == b""  # no renew carried any of it
    body = _finish_body(server)
    assert sorted(_finish_logs(body)) == [("stderr", b"to stderr\n"), ("stdout", b"to stdout\n")]
    assert body["truncated"] is False and "running" in body["stages"]
    assert server.requests("POST", wire.OUTPUT_URLS.format(id="ex1", attempt=1)) == []


def test_a_finish_answered_400_is_finished_again_with_the_same_last_output(server, work_root):
    """The first finish was not committed (400), so the second carries the script's last output."""
    need_bwrap()
    client, settings = _grid(server, work_root)
    settings = settings.model_copy(update={"log_flush_interval_seconds": 60.0})
    server.objects["/blobs/script"] = PRINTER
    claim = server.answers[("POST", wire.CLAIM.format(id="ex1"))][0][1]
    claim.update(inputs=[dict(claim["inputs"][0], sha256=_sha(PRINTER), size=len(PRINTER))])
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (400, {"detail": "No."}), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "failed"
    first, second = [json.loads(r["body"]) for r in server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))]
    assert _finish_logs(first) == _finish_logs(second) and len(_finish_logs(second)) == 2


def test_a_run_that_writes_files_shows_its_last_output_before_the_uploads(server, work_root):
    need_bwrap()
    client, settings = _grid(server, work_root)
    settings = settings.model_copy(update={"log_flush_interval_seconds": 60.0})
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    assert run_execution("ex1", client, settings) == "succeeded"
    assert b"read 17 bytes" in _logs(server) and b"to stderr" in _logs(server)
    assert _finish_logs(_finish_body(server)) == []
    order = [r["path"] for r in server.seen if r["method"] == "POST"]
    assert order.index(wire.RENEW.format(id="ex1", attempt=1)) < order.index(wire.OUTPUT_URLS.format(id="ex1", attempt=1))

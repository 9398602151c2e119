"""The CLI's commands against a fake API: exit codes of `logs -f`, download while running,
cancelling a batch in one request, --version, the human status, list order, and the local grid
started and stopped through its subprocess entry point."""
from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rgrid.cli import app, connect, local
from rgrid.cli.batch import follow_batch, unqueue
from rgrid.cli.output import local_time
from rgrid.client import ApiError
from rgrid.sse import Event
from rgrid_core.localstate import GridState


def text(s: str) -> str:
    """Output with rich's line wrapping undone, so sentences can be searched for."""
    return " ".join(s.split())


class FakeApi:
    """Answers (method, path) from a table: a value, an exception to raise, a callable of the
    request's params/body, or an iterator (one answer per call). Records every call."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.calls: list[tuple[str, str, dict | None]] = []
        self.timeouts: list[float | None] = []  # each POST's own timeout (None: the client's)

    def answer(self, method: str, path: str, data):
        self.calls.append((method, path, data))
        if (method, path) not in self.routes:
            raise AssertionError(f"unexpected {method} {path}")
        value = self.routes[(method, path)]
        if hasattr(value, "__next__"):
            value = next(value)
        elif callable(value):
            value = value(data)
        if isinstance(value, BaseException):
            raise value
        return value

    def get(self, path: str, **params):
        return self.answer("GET", path, {k: v for k, v in params.items() if v is not None})

    def get_page(self, path: str, **params):
        """A list's page and next cursor: a route's (rows, cursor) pair, or rows alone (the last page)."""
        value = self.get(path, **params)
        return value if isinstance(value, tuple) else (value, None)

    def post(self, path: str, json=None, timeout: float | None = None):
        self.timeouts.append(timeout)
        return self.answer("POST", path, json)

    def events(self, path: str, **params):
        """A follow stream: the table's answer for ("EVENTS", path) is the list of its events."""
        yield from self.answer("EVENTS", path, params or None)

    def called(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.calls if (m, p) == (method, path))


@pytest.fixture
def api(monkeypatch):
    fake = FakeApi({})
    monkeypatch.setattr(connect, "client", lambda start_local=False: fake)
    return fake


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def page(*chunks: tuple[str, bytes], finished: bool, after: int = 0) -> dict:
    return {"chunks": [{"id": after + i + 1, "attempt": 1, "stream": s, "data_b64": base64.b64encode(d).decode()}
                       for i, (s, d) in enumerate(chunks)],
            "next_after": after + len(chunks), "status": "running", "finished": finished}


def log_event(chunk_id: int, stream: str, data: bytes) -> Event:
    return Event("log", str(chunk_id), {"id": chunk_id, "attempt": 1, "stream": stream,
                                        "data_b64": base64.b64encode(data).decode()})


EX = {"id": "ex-1", "status": "succeeded", "script": "job.py", "args": ["a b", "/work/x.csv"], "env_keys": ["TOKEN"],
      "runtime": "python:3.11", "batch_id": None, "attempt": 1, "worker_id": "w-1", "exit_code": 0, "reason": None,
      "log_truncated": False, "created_at": "2026-05-01T12:00:00.123456Z", "queued_at": "2026-05-01T12:00:01.5+00:00",
      "started_at": "2026-05-01T12:00:02", "finished_at": None, "attempts": []}


# ---------------------------------------------------------------- logs -f exits as rgrid run would


@pytest.mark.parametrize("final, code", [
    ({"status": "succeeded", "exit_code": 0}, 0),
    ({"status": "failed", "exit_code": 7, "reason": "The script exited with code 7."}, 7),
    ({"status": "failed", "exit_code": None, "reason": "An input file's stored copy is damaged."}, 1),
    ({"status": "timed_out", "exit_code": None, "reason": "Timed out after 2 s."}, 124),
    ({"status": "canceled", "exit_code": None, "reason": "Canceled by the user."}, 130),
    ({"status": "lost", "exit_code": None, "reason": "attempt 3 on worker w-2 lost"}, 1),
])
def test_logs_follow_exits_with_the_runs_code(api, final, code):
    api.routes[("EVENTS", "/v1/executions/ex-1/follow")] = [
        Event("status", "0", {"status": "running", "exit_code": None, "reason": None, "worker_id": "w-1"}),
        log_event(1, "stdout", b"hello\n"), log_event(2, "stderr", b"warn\n"), log_event(3, "stdout", b"bye\n"),
        Event("end", "3", {"worker_id": "w-1", "reason": None, **final})]
    r = invoke("logs", "-f", "ex-1")
    assert r.exit_code == code, r.output
    assert r.stdout == "hello\nbye\n"
    assert r.stderr.startswith("warn\n")
    if final.get("reason"):
        assert f"ex-1 {final['status']}: {final['reason']}" in text(r.stderr)
    assert [c[:2] for c in api.calls] == [("EVENTS", "/v1/executions/ex-1/follow")]  # one stream, no polling


def test_logs_follow_says_the_apis_sentence_when_the_stream_cannot_be_opened(api):
    api.routes[("EVENTS", "/v1/executions/ex-9/follow")] = ApiError("No execution 'ex-9' for this API key.", 404)
    r = invoke("logs", "-f", "ex-9")
    assert r.exit_code == 1 and "No execution 'ex-9' for this API key." in text(r.stderr)


def test_logs_follow_ctrl_c_stops_following_and_cancels_nothing(api):
    api.routes[("EVENTS", "/v1/executions/ex-1/follow")] = KeyboardInterrupt()
    r = invoke("logs", "--follow", "ex-1")
    assert r.exit_code == 130
    assert not [c for c in api.calls if c[0] == "POST"]


def test_logs_without_follow_prints_what_is_there_and_exits_0(api):
    api.routes[("GET", "/v1/executions/ex-1/logs")] = iter([
        page(("stdout", b"out\n"), ("stderr", b"err\n"), finished=False), page(finished=False, after=2)])
    r = invoke("logs", "ex-1")
    assert r.exit_code == 0 and r.stdout == "out\n" and r.stderr == "err\n"


# ---------------------------------------------------------------- download


@pytest.mark.parametrize("status", ["uploading", "queued", "running"])
def test_download_of_an_unfinished_run_says_so_and_fails(api, status):
    api.routes[("GET", "/v1/executions/ex-1")] = {**EX, "status": status}
    r = invoke("download", "ex-1")
    assert r.exit_code == 1
    said = text(r.stderr)
    assert f"ex-1 is still {status}" in said and "rgrid logs -f ex-1" in said
    assert "no output files" not in said
    assert api.called("GET", "/v1/executions/ex-1/outputs") == 0


@pytest.mark.parametrize("status", ["canceled", "lost"])
def test_download_of_a_run_that_never_finished_fails(api, status):
    api.routes[("GET", "/v1/executions/ex-1")] = {**EX, "status": status}
    r = invoke("download", "ex-1")
    assert r.exit_code == 1 and f"was {status}, so it has no outputs" in text(r.stderr)


def test_download_of_a_finished_run_without_outputs_exits_0(api, tmp_path):
    api.routes[("GET", "/v1/executions/ex-1")] = {**EX, "status": "failed"}
    api.routes[("GET", "/v1/executions/ex-1/outputs")] = []
    r = invoke("download", "ex-1", "--output-dir", str(tmp_path / "o"))
    assert r.exit_code == 0 and "has no output files" in text(r.stderr)


# ---------------------------------------------------------------- cancelling a batch


BATCH_CANCELED = {"batch_id": "b-0123456789", "canceled": 3, "counts": {"succeeded": 2, "canceled": 3},
                  "total": 5, "finished": True}


def test_cancel_of_a_batch_is_one_request(api):
    api.routes[("POST", "/v1/batches/b-0123456789/cancel")] = BATCH_CANCELED
    r = invoke("cancel", "b-0123456789")
    assert r.exit_code == 0, r.output
    assert api.calls == [("POST", "/v1/batches/b-0123456789/cancel", None)]
    assert "b-0123456789: canceled 3 unfinished execution(s); now 2 succeeded, 3 canceled (5 executions)" in text(r.stdout)


def test_cancel_of_someone_elses_batch_says_the_apis_sentence(api):
    api.routes[("POST", "/v1/batches/b-0000000000/cancel")] = ApiError("No batch 'b-0000000000' for this API key.", 404)
    r = invoke("cancel", "b-0000000000")
    assert r.exit_code == 1 and "No batch 'b-0000000000' for this API key." in text(r.stderr)


def test_cancel_of_an_execution(api):
    api.routes[("POST", "/v1/executions/ex-1/cancel")] = {**EX, "status": "canceled"}
    r = invoke("cancel", "ex-1")
    assert r.exit_code == 0 and r.stdout.strip() == "ex-1: canceled"


def test_ctrl_c_while_following_a_batch_cancels_it_in_one_request(api, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: Ctrl-C cancels
    api.routes[("EVENTS", "/v1/batches/b-0123456789/follow")] = KeyboardInterrupt()
    api.routes[("POST", "/v1/batches/b-0123456789/cancel")] = BATCH_CANCELED
    with pytest.raises(Exception) as info:
        follow_batch(api, "b-0123456789", 5)
    assert getattr(info.value, "exit_code", None) == 130
    assert api.called("POST", "/v1/batches/b-0123456789/cancel") == 1
    assert not [c for c in api.calls if c[1].startswith("/v1/executions")]
    assert "Canceled 3 unfinished execution(s) of batch b-0123456789." in text(capsys.readouterr().err)


def test_the_cancel_after_ctrl_c_is_bounded_and_a_failed_one_says_how_to_cancel(api, monkeypatch, capsys):
    """Ctrl-C must get the user out promptly: the cancel request has its own short timeout, and one
    that fails (the API too slow or away) exits 1 at once with the way to cancel later."""
    from rgrid.cli.follow import CANCEL_TIMEOUT

    monkeypatch.setattr(sys, "stdin", io.StringIO())
    api.routes[("EVENTS", "/v1/batches/b-0123456789/follow")] = KeyboardInterrupt()
    api.routes[("POST", "/v1/batches/b-0123456789/cancel")] = ApiError(
        "Cannot reach the RGrid API at http://api.test (ReadTimeout).")
    with pytest.raises(Exception) as info:
        follow_batch(api, "b-0123456789", 5)
    assert getattr(info.value, "exit_code", None) == 1
    assert api.timeouts == [CANCEL_TIMEOUT] and CANCEL_TIMEOUT <= 10
    said = text(capsys.readouterr().err)
    assert "Could not cancel: Cannot reach the RGrid API" in said
    assert "Batch b-0123456789 may still run: cancel it with `rgrid cancel b-0123456789`." in said


def test_a_second_ctrl_c_during_the_cancel_exits_at_once_with_how_to_cancel(monkeypatch, capsys):
    from rgrid.cli.follow import cancel_or_detach

    monkeypatch.setattr(sys, "stdin", io.StringIO())

    def cancel() -> str:
        raise KeyboardInterrupt

    with pytest.raises(Exception) as info:
        cancel_or_detach("?", cancel, "Detached.", "ex-1 may still run: cancel it with `rgrid cancel ex-1`.")
    assert getattr(info.value, "exit_code", None) == 1
    said = text(capsys.readouterr().err)
    assert "Stopped before the cancel was confirmed. ex-1 may still run: cancel it with `rgrid cancel ex-1`." in said


@pytest.mark.parametrize("answer, code, said", [
    ({**EX, "status": "canceled"}, 130, "Canceled ex-1."),
    (ApiError("Cannot reach the RGrid API at http://api.test (ReadTimeout)."), 1,
     "Could not cancel: Cannot reach the RGrid API at http://api.test (ReadTimeout). "
     "ex-1 may still run: cancel it with `rgrid cancel ex-1`."),
])
def test_ctrl_c_in_rgrid_run_cancels_with_the_short_timeout(api, monkeypatch, tmp_path, answer, code, said):
    from rgrid.cli import run
    from rgrid.cli.follow import CANCEL_TIMEOUT

    (tmp_path / "job.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "submit", lambda c, *args: {"id": "ex-1", "status": "queued"})
    api.routes[("EVENTS", "/v1/executions/ex-1/follow")] = KeyboardInterrupt()
    api.routes[("POST", "/v1/executions/ex-1/cancel")] = answer
    r = invoke("run", "job.py")
    assert r.exit_code == code, r.output
    assert api.timeouts == [CANCEL_TIMEOUT]
    assert said in text(r.stderr)


def test_a_posts_own_timeout_reaches_httpx_and_other_posts_keep_the_clients():
    """Through the real Client: the cancel POST waits CANCEL_TIMEOUT a step, any other the client's 30 s."""
    import httpx

    from rgrid.cli.follow import CANCEL_TIMEOUT
    from rgrid.client import Client

    seen = {}

    def handle(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.extensions["timeout"]
        return httpx.Response(200, json={"id": "ex-1", "status": "canceled"})

    c = Client("http://api.test", "key")
    c.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handle), timeout=30)
    c.post("/v1/executions/ex-1/cancel", timeout=CANCEL_TIMEOUT)
    c.post("/v1/executions/ex-1/submit")
    assert seen["/v1/executions/ex-1/cancel"] == {k: CANCEL_TIMEOUT for k in ("connect", "read", "write", "pool")}
    assert seen["/v1/executions/ex-1/submit"]["read"] == 30


def test_a_batch_is_followed_over_its_stream_and_its_rows_read_once_at_the_end(api, capsys):
    def view(counts, finished=False):
        return {"batch_id": "b-0123456789", "total": 3, "counts": counts, "finished": finished, "cost_eur": None}

    api.routes[("EVENTS", "/v1/batches/b-0123456789/follow")] = [
        Event("progress", None, view({"queued": 3})), Event("progress", None, view({"running": 2, "queued": 1})),
        Event("end", None, view({"succeeded": 2, "failed": 1}, finished=True))]
    rows = [{**EX, "id": f"ex-{i}", "batch_id": "b-0123456789"} for i in range(3)]
    api.routes[("GET", "/v1/executions")] = rows
    assert follow_batch(api, "b-0123456789", 3) == list(reversed(rows))
    assert [c[:2] for c in api.calls] == [("EVENTS", "/v1/batches/b-0123456789/follow"), ("GET", "/v1/executions")]
    assert "3/3 queued 0 running 0 done 2 failed 1" in text(capsys.readouterr().err)


def test_a_batch_that_failed_to_queue_is_canceled_in_one_request(api, capsys):
    api.routes[("POST", "/v1/batches/b-0123456789/cancel")] = {**BATCH_CANCELED, "canceled": 2}
    unqueue(api, "b-0123456789", created=True)
    assert api.calls == [("POST", "/v1/batches/b-0123456789/cancel", None)]
    assert "canceled its 2 execution(s) already queued" in text(capsys.readouterr().err)
    api.calls.clear()
    unqueue(api, "b-0123456789", created=False)  # nothing was created: nothing to ask
    assert api.calls == []


# ---------------------------------------------------------------- --version, status, list


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"rgrid {version('rgrid')}"


@pytest.fixture
def berlin(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_shown_in_the_local_zone_with_the_zone(berlin):
    assert local_time("2026-05-01T12:00:00.123456Z") == "2026-05-01 14:00:00.123 +02:00"
    assert local_time("2026-01-01T12:00:00.5+00:00", 6) == "2026-01-01 13:00:00.500000 +01:00"
    assert local_time("2026-01-01T12:00:00") == "2026-01-01 13:00:00.000 +01:00"  # no zone: UTC
    assert local_time("2026-01-01T12:00:00Z", 0) == "2026-01-01 13:00:00 +01:00"
    assert local_time(None) == "" and local_time("not a time") == "not a time"


def test_human_status_shows_zones_the_created_fraction_and_truncated_logs(api, berlin):
    api.routes[("GET", "/v1/executions/ex-1")] = {**EX, "log_truncated": True}
    r = invoke("status", "ex-1")
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "2026-05-01 14:00:00.123456 +02:00" in lines["created_at"]
    assert "2026-05-01 14:00:01.500 +02:00" in lines["queued_at"]
    assert "finished_at" not in lines
    assert "truncated" in lines["logs"]
    assert "TOKEN (values hidden)" in lines["env"]
    api.routes[("GET", "/v1/executions/ex-1")] = EX
    assert "truncated" not in invoke("status", "ex-1").stdout


def test_list_asks_for_the_newest_and_keeps_the_apis_order(api):
    rows = [{**EX, "id": f"ex-{n}", "created_at": f"2026-05-01T12:00:0{n}.000001Z"} for n in (3, 2, 1)]
    api.routes[("GET", "/v1/executions")] = rows
    r = invoke("list", "--batch", "b-0123456789", "--limit", "3")
    assert r.exit_code == 0, r.output
    assert api.calls == [("GET", "/v1/executions", {"batch": "b-0123456789", "limit": 3})]
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["ex-3", "ex-2", "ex-1"]
    r = invoke("list", "--json")
    assert [e["id"] for e in json.loads(r.stdout)] == ["ex-3", "ex-2", "ex-1"]
    assert "--cursor" not in r.stderr  # the last page names no next one


def test_list_prints_the_command_for_the_next_page_and_goes_on_with_cursor(api):
    rows = [{**EX, "id": f"ex-{n}", "status": "failed"} for n in (9, 8)]
    api.routes[("GET", "/v1/executions")] = (rows, "8")
    r = invoke("list", "--status", "failed", "--limit", "2")
    assert r.exit_code == 0, r.output
    assert "rgrid list --status failed --limit 2 --cursor 8" in text(r.stderr)
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["ex-9", "ex-8"]
    api.routes[("GET", "/v1/executions")] = [{**EX, "id": "ex-7", "status": "failed"}]
    r = invoke("list", "--json", "--status", "failed", "--limit", "2", "--cursor", "8")
    assert api.calls[-1] == ("GET", "/v1/executions", {"status": "failed", "limit": 2, "cursor": "8"})
    assert [e["id"] for e in json.loads(r.stdout)] == ["ex-7"] and "--cursor" not in r.stderr


# ---------------------------------------------------------------- the local grid through its entry point


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RGRID_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RGRID_API_URL", raising=False)
    return tmp_path / "home"


def fake_entry_point(monkeypatch, tmp_path, body: str) -> Path:
    """Run `body` (Python; `argv` and `home` are set) instead of `python -m rgrid_service.localgrid`."""
    script = tmp_path / "fake_localgrid.py"
    script.write_text("import json, os, sys, time\nargv = sys.argv[1:]\nhome = argv[argv.index('--home') + 1]\n"
                      + body)
    real = local.grid_command
    monkeypatch.setattr(local, "grid_command", lambda action, home, *extra: [
        sys.executable, str(script), *real(action, home, *extra)[3:]])
    return script


STARTS = """
print('step: object store (SeaweedFS)', file=sys.stderr, flush=True)
os.makedirs(os.path.join(home, 'local'), exist_ok=True)
json.dump(argv, open(os.path.join(home, '..', 'argv.json'), 'w'))
json.dump({'home': home, 'api_url': 'http://127.0.0.1:1', 'api_key': 'k', 'ray_address': 'r', 'dashboard_url': 'd',
           'database_url': 'sqlite://', 's3_endpoint': 's3', 'pids': {'api': os.getppid(), 'w-1': os.getppid()}},
          open(os.path.join(home, 'local', 'state.json'), 'w'))
"""


def test_local_up_runs_the_entry_point_with_the_options_and_shows_the_grid(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, STARTS)
    r = invoke("local", "up", "--workers", "3", "--fleet", "pulumi", "--max-workers", "5")
    assert r.exit_code == 0, r.output
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["up", "--home", str(home), "--workers", "3", "--fleet", "pulumi", "--max-workers", "5"]
    assert "http://127.0.0.1:1" in r.stdout and "running" in r.stdout


def test_local_up_failing_shows_the_entry_points_sentence_and_the_logs(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, """
print('step: Ray head', file=sys.stderr)
print('some noise', file=sys.stderr)
print('error: Port 6379 is taken by another program', file=sys.stderr)
sys.exit(3)
""")
    r = invoke("local", "up")
    assert r.exit_code == 1
    assert (f"Could not start the local grid: Port 6379 is taken by another program. Logs are in "
            f"{home / 'local' / 'logs'}.") in text(r.stderr)


def test_local_up_does_not_repeat_what_the_entry_points_sentence_already_says(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, """
print('error: Could not start the local grid: Ray head did not start. Logs are in /x/logs.', file=sys.stderr)
sys.exit(1)
""")
    r = invoke("local", "up")
    assert r.exit_code == 1
    assert text(r.stderr) == "rgrid: Could not start the local grid: Ray head did not start. Logs are in /x/logs."


def test_local_up_without_options_leaves_the_defaults_to_the_entry_point(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, STARTS)
    assert invoke("local", "up").exit_code == 0
    assert json.loads((tmp_path / "argv.json").read_text()) == ["up", "--home", str(home)]
    r = invoke("local", "up")  # it runs now
    assert r.exit_code == 0 and "already running" in text(r.stderr)


def test_local_up_returns_when_the_starter_exits_even_if_its_children_keep_stderr(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, STARTS + """
import subprocess
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])  # inherits our stderr
""")
    started = time.monotonic()
    r = invoke("local", "up")
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 10


def test_run_starts_a_local_grid_when_none_runs(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, STARTS)
    ep = connect.endpoint(start_local=True)
    assert (ep.api_url, ep.api_key, ep.local) == ("http://127.0.0.1:1", "k", True)
    assert json.loads((tmp_path / "argv.json").read_text())[3:5] == ["--workers", "2"]


def test_local_down_shows_what_the_entry_point_prints(monkeypatch, tmp_path, home):
    fake_entry_point(monkeypatch, tmp_path, """
print('Local grid stopped (data and results are kept).')
print('Removed the input cache (1.0 MB).', file=sys.stderr)
""")
    r = invoke("local", "down")
    assert r.exit_code == 0, r.output
    said = text(r.stderr)
    assert "Local grid stopped (data and results are kept)." in said and "Removed the input cache" in said


def test_without_the_service_components_the_local_grid_says_how_to_get_them(monkeypatch, home):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rgrid_service" else real(name, *a))
    for args in (("local", "up"), ("local", "down")):
        r = invoke(*args)
        assert r.exit_code == 1
        assert ("The local grid needs the service components. Install them with `pip install 'rgrid[service]'`, "
                "or point RGRID_API_URL at a control plane.") in text(r.stderr)


def test_local_status_reads_the_state_file(home):
    r = invoke("local", "status")
    assert r.exit_code == 1 and "No local grid is running" in text(r.stderr)
    GridState(home=str(home), api_url="http://127.0.0.1:9", api_key="k", ray_address="r", dashboard_url="d",
              s3_endpoint="s3", database_url="sqlite://", pids={"api": os.getpid()}).save()
    r = invoke("local", "status")
    assert r.exit_code == 0, r.output
    assert "http://127.0.0.1:9" in r.stdout and "running" in r.stdout


def test_the_client_never_imports_the_service():
    import subprocess

    code = ("import sys; from rgrid.cli import app; import rgrid.cli.batch, rgrid.client, rgrid.transfer; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rgrid_service', 'rgrid_runner')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_starting_the_cli_loads_neither_httpx_nor_progress_bars():
    import subprocess

    code = ("import sys; from rgrid.cli import app; "
            "print([m for m in ('httpx', 'rich.progress', 'rich.table', 'tenacity') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"

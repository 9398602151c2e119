"""What a queued run waits for (policies.waiting, by table), the provider-error retry rounds, the
stage timeline, and how the CLI shows them (the waiting spinner's plain-line form, `rgrid status`)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from rgrid_core.states import WorkerState
from rgrid_service.fleet import explain, retry_wait
from rgrid_service.policies.waiting import PendingWorker, WaitSnapshot, duration, ordinal, waiting
from rgrid_service.stages import current_stage, timeline

NOW = datetime(2026, 11, 30, 12, 0, 0)
ago = lambda s: NOW - timedelta(seconds=s)  # noqa: E731
REQ = lambda w, s: PendingWorker(w, WorkerState.REQUESTED, ago(s))  # noqa: E731
BOOT = lambda w, s: PendingWorker(w, WorkerState.BOOTING, ago(s))  # noqa: E731


@pytest.mark.parametrize("snap, kind, sentence", [
    (WaitSnapshot(NOW, 4, 12), "slot", "Waiting for a free slot (4th of 12 queued)"),
    (WaitSnapshot(NOW, 1, 1), "slot", "Waiting for a free slot (1st of 1 queued)"),
    (WaitSnapshot(NOW, 12, 13), "slot", "Waiting for a free slot (12th of 13 queued)"),
    (WaitSnapshot(NOW, 22, 23), "slot", "Waiting for a free slot (22nd of 23 queued)"),
    # a requested worker: provisioning, counted from the run's provisioning_at, else the record
    (WaitSnapshot(NOW, 1, 3, provisioning_at=ago(30), workers=(REQ("w-7", 31),)), "provisioning",
     "Provisioning worker… (30 s elapsed)"),
    (WaitSnapshot(NOW, 1, 3, workers=(REQ("w-7", 75),)), "provisioning", "Provisioning worker… (1 min 15 s elapsed)"),
    # booting: the median boot minus the time this one has booted; without history, no estimate
    (WaitSnapshot(NOW, 2, 3, workers=(BOOT("w-7", 20),), boot_seconds=60), "booting",
     "Worker w-7 is booting (about 40 s left)"),
    (WaitSnapshot(NOW, 2, 3, workers=(BOOT("w-7", 20),)), "booting", "Worker w-7 is booting…"),
    (WaitSnapshot(NOW, 2, 3, workers=(BOOT("w-7", 90),), boot_seconds=60), "booting",
     "Worker w-7 is booting (any moment now)"),
    # the oldest booting worker; booting wins over another one still requested
    (WaitSnapshot(NOW, 2, 3, workers=(REQ("w-9", 1), BOOT("w-8", 5), BOOT("w-7", 10)), boot_seconds=70), "booting",
     "Worker w-7 is booting (about 1 min left)"),
    # provider trouble, in the plan's words, while workers are requested
    (WaitSnapshot(NOW, 1, 1, workers=(REQ("w-7", 5),), fleet_error="Worker limit reached. Upgrade account or wait "
                  "for workers to free up."), "provider",
     "Worker limit reached. Upgrade account or wait for workers to free up."),
    (WaitSnapshot(NOW, 1, 1, workers=(REQ("w-7", 5),),
                  fleet_error="Cloud provider error. Retrying... (attempt 2/3): error: 503 injected"), "provider",
     "Cloud provider error. Retrying... (attempt 2/3)"),
    (WaitSnapshot(NOW, 1, 1, workers=(REQ("w-7", 5),),
                  fleet_error="Cannot reach cloud provider. Check network connection. (attempt 1/3)"), "provider",
     "Cannot reach cloud provider. Check network connection."),
    # a failed update with nothing requested (a retirement that failed) is not this run's trouble
    (WaitSnapshot(NOW, 3, 5, fleet_error="Cloud provider error. Retrying... (attempt 1/3): x"), "slot",
     "Waiting for a free slot (3rd of 5 queued)"),
    # placed on a worker: starting there, whatever the fleet does
    (WaitSnapshot(NOW, 1, 2, dispatched_to="w-3", workers=(REQ("w-7", 5),), fleet_error="Worker limit reached."),
     "dispatched", "Starting on worker w-3…"),
])
def test_waiting_sentence(snap, kind, sentence):
    w = waiting(snap)
    assert (w.kind, w.sentence) == (kind, sentence)
    assert (w.position, w.queued) == (snap.position, snap.queued)


def test_waiting_parts():
    w = waiting(WaitSnapshot(NOW, 2, 3, workers=(BOOT("w-7", 20),), boot_seconds=60))
    assert (w.worker_id, w.elapsed_seconds, w.seconds_left) == ("w-7", 20.0, 40.0)
    w = waiting(WaitSnapshot(NOW, 1, 1, workers=(REQ("w-7", 5),),
                             fleet_error="Cloud provider error. Retrying... (attempt 3/3): boom"))
    assert w.attempt == "3/3"


def test_ordinals_and_durations():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 101, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "101st", "111th"]
    assert [duration(s) for s in (0, 0.4, 59.6, 60, 61, 3599, 3600, 7260)] == \
        ["0 s", "0 s", "1 min", "1 min", "1 min 1 s", "59 min 59 s", "1 h 0 min", "2 h 1 min"]


def test_provider_retries_come_in_rounds_of_three():
    base = 5.0
    waits = [retry_wait(f, base) for f in range(1, 13)]
    assert waits == [5, 5, 10, 5, 5, 20, 5, 5, 40, 5, 5, 80]
    assert retry_wait(30, base) == 80  # at most 16 times the base
    tries = [explain(RuntimeError("error: 503 Service Unavailable"), f) for f in range(1, 5)]
    assert [t.split(": ")[0] for t in tries] == [f"Cloud provider error. Retrying... (attempt {n}/3)" for n in (1, 2, 3, 1)]
    assert explain(RuntimeError("hcloud: resource_limit_exceeded"), 2) == \
        "Worker limit reached. Upgrade account or wait for workers to free up."
    assert explain(RuntimeError("dial tcp 127.0.0.1:1: connect: connection refused"), 5) == \
        "Cannot reach cloud provider. Check network connection. (attempt 2/3)"


def row(**kw):
    base = dict(queued_at=None, provisioning_at=None, dispatched_at=None, finished_at=None)
    return SimpleNamespace(**{**base, **kw})


def test_timeline_in_stage_order_and_a_requeue_starts_it_again():
    t = lambda s: NOW + timedelta(seconds=s)  # noqa: E731
    ex = row(queued_at=t(0), provisioning_at=t(1), dispatched_at=t(30), finished_at=t(40))
    attempt = SimpleNamespace(started_at=t(31), running_at=t(32), uploading_at=t(39))
    steps = timeline(ex, attempt)
    assert [s for s, _ in steps] == ["queued", "provisioning", "dispatched", "staging", "running", "uploading",
                                     "finished"]
    assert current_stage(steps) == "finished"
    assert current_stage(timeline(row())) == "created"
    # Running, no provisioning needed.
    steps = timeline(row(queued_at=t(0), dispatched_at=t(1)), SimpleNamespace(started_at=t(2), running_at=None,
                                                                            uploading_at=None))
    assert [s for s, _ in steps] == ["queued", "dispatched", "staging"]
    # Re-queued after its worker died: the old attempt's stages and provisioning are before the new queueing.
    requeued = row(queued_at=t(100), provisioning_at=t(1))
    assert [s for s, _ in timeline(requeued, attempt)] == ["queued"]


# ---------------------------------------------------------------- the CLI


def watch_events(statuses, clock, display):
    """Feed a WaitWatch the status events of a follow stream, one every half second."""
    from rgrid.cli.stages import WaitWatch

    watch = WaitWatch(clock=clock, display=display)
    for status in statuses:
        watch.seen(status)
        clock.sleep(0.5)
    watch.close()
    return watch


def queued(kind, sentence, **kw):
    return {"id": "ex-1", "status": "queued", "worker_id": None,
            "waiting": {"kind": kind, "sentence": sentence, "position": 1, "queued": 1, **kw}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_waiting_prints_each_new_stage_once_as_a_plain_line(capsys):
    from rgrid.cli.stages import WaitDisplay

    answers = [
        queued("provisioning", "Provisioning worker… (0 s elapsed)", worker_id="w-7"),  # within the quiet second
        queued("provisioning", "Provisioning worker… (1 s elapsed)", worker_id="w-7"),
        queued("provisioning", "Provisioning worker… (2 s elapsed)", worker_id="w-7"),
        queued("provisioning", "Provisioning worker… (3 s elapsed)", worker_id="w-7"),
        queued("provider", "Cloud provider error. Retrying... (attempt 1/3)", attempt="1/3"),
        queued("provider", "Cloud provider error. Retrying... (attempt 1/3)", attempt="1/3"),
        queued("provider", "Cloud provider error. Retrying... (attempt 2/3)", attempt="2/3"),
        queued("booting", "Worker w-7 is booting (about 40 s left)", worker_id="w-7"),
        queued("booting", "Worker w-7 is booting (about 39 s left)", worker_id="w-7"),
        queued("dispatched", "Starting on worker w-7…", worker_id="w-7"),
        {"id": "ex-1", "status": "running", "worker_id": "w-7"},
    ]
    watch = watch_events(answers + [{"id": "ex-1", "status": "succeeded", "worker_id": "w-7"}], Clock(),
                         WaitDisplay(live=False))
    assert watch.started
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "Provisioning worker… (2 s elapsed)",
        "Cloud provider error. Retrying... (attempt 1/3)",
        "Cloud provider error. Retrying... (attempt 2/3)",
        "Worker w-7 is booting (about 40 s left)",
        "Starting on worker w-7…",
        "Started on worker w-7 after 5 s of waiting.",
    ]


def test_a_run_that_starts_at_once_shows_nothing(capsys):
    from rgrid.cli.stages import WaitDisplay

    watch_events([queued("slot", "Waiting for a free slot (1st of 1 queued)"),
                  {"id": "ex-1", "status": "running", "worker_id": "w-1"}], Clock(), WaitDisplay(live=False))
    assert capsys.readouterr().err == ""


def test_the_spinner_shows_the_sentence_and_the_time_waited():
    import io

    from rich.console import Console

    from rgrid.cli import stages

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    real, stages.err = stages.err, console
    try:
        display = stages.WaitDisplay(live=True)
        display.show({"kind": "slot", "sentence": "Waiting for a free slot (4th of 12 queued)"}, 75.0)
        time.sleep(0.3)  # the spinner draws on its own thread
        display.close()
    finally:
        stages.err = real
    shown = console.file.getvalue()
    assert "Waiting for a free slot (4th of 12 queued)" in shown and "waited 1 min 15 s" in shown, shown


def test_status_shows_the_timeline_with_durations(monkeypatch):
    from typer.testing import CliRunner

    from rgrid.cli import app, connect

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    stamps = [("queued", "12:00:00.000"), ("provisioning", "12:00:00.500"), ("dispatched", "12:00:42.000"),
              ("staging", "12:00:42.100"), ("running", "12:00:42.350"), ("uploading", "12:01:50.000"),
              ("finished", "12:01:50.200")]
    ex = {"id": "ex-1", "status": "succeeded", "script": "job.py", "args": [], "env_keys": [], "runtime": "python:3.11",
          "attempt": 1, "worker_id": "w-7", "exit_code": 0, "attempts": [], "stage": "finished",
          "timeline": [{"stage": s, "at": f"2026-11-30T{t}000Z"} for s, t in stamps]}
    fake = SimpleNamespace(get=lambda path, **kw: ex)
    monkeypatch.setattr(connect, "client", lambda start_local=False: fake)
    r = CliRunner().invoke(app, ["status", "ex-1"])
    time.tzset()
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()]
    after = {cells[0]: cells[4:] for cells in rows if cells and cells[0] in dict(stamps)}
    assert list(after) == [s for s, _ in stamps]
    assert after["queued"] == [] and after["provisioning"] == ["+0.500", "s"]
    assert after["dispatched"] == ["+42", "s"] and after["running"] == ["+0.250", "s"]
    assert after["uploading"] == ["+1", "min", "8", "s"]
    assert ["total", "1", "min", "50", "s"] in rows
    assert "12:00:42.350" in " ".join(" ".join(c) for c in rows if c and c[0] == "running")

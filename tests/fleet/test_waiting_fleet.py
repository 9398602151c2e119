"""What a user sees while capacity arrives, on the real Pulumi engine and the local Hetzner: `rgrid
run` says "Provisioning worker…" then "Worker w-N is booting" before the script's output, and each
provider trouble injected into the cloud reaches a waiting run as its sentence.

The scenarios run in order on one grid that starts with no workers.
"""
from __future__ import annotations

import json
import re
import uuid

from tests.conftest import wait_until

from .conftest import FleetGrid, log_tail

SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\n"
QUOTA = "Worker limit reached. Upgrade account or wait for workers to free up."
UNREACHABLE = "Cannot reach cloud provider. Check network connection."
TRANSIENT = re.compile(r"^Cloud provider error\. Retrying\.\.\. \(attempt [123]/3\)$")
STAGES = ["queued", "provisioning", "dispatched", "staging", "running", "uploading", "finished"]


def test_1_run_shows_provisioning_then_booting_then_the_output(fleet_grid: FleetGrid, tmp_path):
    # A running server's cloud-init takes a while before the worker starts, as on Hetzner, so the
    # booting stage (the engine's update is done, the agent has not called in) can be seen.
    with fleet_grid.cloud as c:
        c.put("/_standin/config", json={"init_delay_seconds": 30}).raise_for_status()
    (tmp_path / "hello.py").write_text("print('hello from a new worker')\n")
    try:
        r = fleet_grid.rgrid("run", "hello.py", cwd=tmp_path, timeout=600)
    finally:
        with fleet_grid.cloud as c:
            c.put("/_standin/config", json={"init_delay_seconds": 0}).raise_for_status()
    err = r.stderr.decode()
    assert r.returncode == 0, err + log_tail(fleet_grid, "orchestrator.log")
    assert r.stdout == b"hello from a new worker\n"
    lines = err.splitlines()
    provisioning = [i for i, line in enumerate(lines) if re.fullmatch(r"Provisioning worker… \(\d+ s elapsed\)", line)]
    booting = [i for i, line in enumerate(lines) if re.fullmatch(r"Worker w-\d+ is booting(…| \(.*\))", line)]
    assert provisioning and booting and provisioning[0] < booting[0], err
    assert any(line.startswith("Started on worker w-") for line in lines[booting[0]:]), err
    # Its timeline has every stage, provisioning included, in order.
    ex_id = re.search(r"Execution (ex-\S+) queued\.", err).group(1)
    shown = json.loads(fleet_grid.rgrid("status", "--json", ex_id).stdout)
    assert [s["stage"] for s in shown["timeline"]] == STAGES, shown["timeline"]
    assert [s["at"] for s in shown["timeline"]] == sorted(s["at"] for s in shown["timeline"])


def provider_sentences(grid: FleetGrid, ids: list[str]) -> set[str]:
    """The `waiting` sentences of those runs that wait on the provider."""
    found = set()
    with grid.api() as api:
        for ex_id in ids:
            w = api.get(f"/v1/executions/{ex_id}").json().get("waiting")
            if w and w["kind"] == "provider":
                found.add(w["sentence"])
    return found


def test_2_each_provider_trouble_reaches_a_waiting_run_in_its_words(fleet_grid: FleetGrid):
    first_event = max((e["id"] for e in fleet_grid.events()), default=0)
    # Quota: the cloud allows no more servers than there are. The runs have no history, so they
    # need new workers; the first few go to the one worker, the rest wait.
    with fleet_grid.cloud as c:
        c.put("/_standin/config", json={"max_servers": len(fleet_grid.worker_servers())}).raise_for_status()
    name = f"wait-{uuid.uuid4().hex[:8]}.py"
    ids = [fleet_grid.submit(SLEEP, ["120"], name=name, batch_id="b-waiting") for _ in range(10)]
    try:
        wait_until(lambda: QUOTA in provider_sentences(fleet_grid, ids), 300, "the quota sentence", step=1)
        # A transient API error (5xx on server creates; the provider's own retries give up too),
        # put in force before the quota is lifted so that no update goes through in between.
        fleet_grid.fault(kind="5xx", match="^POST /v1/servers$")
        with fleet_grid.cloud as c:
            c.put("/_standin/config", json={"max_servers": None}).raise_for_status()
        seen = wait_until(lambda: {s for s in provider_sentences(fleet_grid, ids) if TRANSIENT.match(s)} or None,
                          300, "the transient error's sentence", step=1)
        # No connection: every API call is reset (the reset fault comes before the 5xx one).
        fault_5xx = [f["id"] for f in fleet_grid.faults()]
        fleet_grid.fault(kind="reset")
        with fleet_grid.cloud as c:
            for fault_id in fault_5xx:
                c.delete(f"/_standin/faults/{fault_id}").raise_for_status()
        wait_until(lambda: UNREACHABLE in provider_sentences(fleet_grid, ids), 300, "the unreachable sentence",
                   step=1)
    finally:
        fleet_grid.clear_faults()
        with fleet_grid.cloud as c:
            c.put("/_standin/config", json={"max_servers": None}).raise_for_status()
        with fleet_grid.api() as api:
            api.post("/v1/batches/b-waiting/cancel")
    # The failed updates were consecutive (nothing went through in between): their "attempt N/3"
    # counts the tries of each round of three.
    errors = [e["message"] for e in fleet_grid.events() if e["id"] > first_event and e["kind"] == "error"]
    counted = [(i, re.search(r"\(attempt (\d/3)\)", m)) for i, m in enumerate(errors)]
    assert [m.group(1) for _, m in counted if m] == [f"{i % 3 + 1}/3" for i, m in counted if m], errors
    assert seen and errors[0] == QUOTA, errors

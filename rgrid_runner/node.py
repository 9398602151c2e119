"""A worker server's one long-running command: its agent (heartbeats) and its Ray worker node.

    RGRID_WORKER_ID=w-3 RGRID_RAY_ADDRESS=10.0.0.2:6379 python3 -m rgrid_runner.node

Everything it needs comes from RGRID_* environment variables, so the same command and environment
start a worker as a local process group (the `process` fleet) and as a systemd unit rendered into a
server's cloud-init (the `pulumi` fleet): see rgrid_service.fleet.launch. The agent runs in the
background in this process group; this process then becomes the Ray node, so stopping the group
stops the worker.

The Ray cluster's token (RGRID_RAY_AUTH_TOKEN) is moved into a file of mode 0600 in a private folder
under the work root and taken out of the environment: the Ray node and its worker processes read
it from there (RAY_AUTH_TOKEN_PATH), the agent never gets it, and a sandbox sees neither.
"""
from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rgrid_core.constants import SLOT_RESOURCE, WORKER_LABEL


def node_ip(head_address: str) -> str:
    """RGRID_NODE_IP, else the local address that routes to the head (no packet is sent)."""
    if os.environ.get("RGRID_NODE_IP"):
        return os.environ["RGRID_NODE_IP"]
    host, _, port = head_address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port or 6379)))
        return s.getsockname()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_node_command(worker_id: str, head: str, slots: int, ip: str, dashboard: bool = False) -> list[str]:
    """dashboard: the cluster runs Ray's dashboard (RGRID_RAY_DASHBOARD), so this node's dashboard
    agent runs in full; otherwise it is minimal (rgrid_service.raynet.lean_flags)."""
    from rgrid_service.raynet import lean_flags

    return [sys.executable, "-m", "rgrid_service.raynet", "start", "--block", *lean_flags(dashboard),
            "--address", head, "--node-ip-address", ip,
            "--num-cpus", str(slots), "--resources", json.dumps({SLOT_RESOURCE: slots}),
            "--labels", json.dumps({WORKER_LABEL: worker_id}),
            # A free port instead of the fixed 52365, so several nodes share one machine.
            "--dashboard-agent-listen-port", str(free_port()),
            "--disable-usage-stats"]


RAY_TOKEN_VAR = "RGRID_RAY_AUTH_TOKEN"
# The environment variables that name or hold a Ray token: the agent gets none of them.
RAY_TOKEN_VARS = (RAY_TOKEN_VAR, "RGRID_RAY_TOKEN_FILE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")


def token_to_file(env: dict[str, str]) -> Path:
    """Move the Ray token out of `env` into `<work root>/.ray-token-XXXX/token` (folder 0700, file
    0600), name that file in env's RGRID_RAY_TOKEN_FILE, and return the folder (removed on exit)."""
    token = env.pop(RAY_TOKEN_VAR, "").strip()
    if not token:
        raise SystemExit(f"{RAY_TOKEN_VAR} is not set: this worker cannot join the Ray cluster, which runs with "
                         "token authentication. The control plane puts the token into the worker's launch "
                         "environment from its RGRID_RAY_TOKEN_FILE; set that there and start the worker again.")
    from rgrid_service.raynet import write_token

    from .settings import WorkerSettings

    root = Path(env.get("RGRID_WORK_ROOT") or WorkerSettings.model_fields["work_root"].default)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".ray-token-", dir=root))
    write_token(folder / "token", token)
    env["RGRID_RAY_TOKEN_FILE"] = str(folder / "token")
    return folder


def remove_on_exit(folder: Path) -> None:
    """Remove the token's folder when this process ends, by SIGTERM (a stopped worker) too."""
    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def on_term(signum, _frame) -> None:
        remove()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    atexit.register(remove)
    signal.signal(signal.SIGTERM, on_term)


START_TRIES = 3
START_WINDOW = 90.0  # a Ray node that ends sooner than this after its start failed to start
REJOIN_TRIES = 6  # failed starts in a row before a worker whose node once ran gives up
REJOIN_MAX_WAIT = 30.0


def next_wait(ran_for: float, failures: int, joined_before: bool) -> float | None:
    """After the Ray node ended: seconds to wait before starting it again, or None to give up.

    A node that ran for START_WINDOW had joined, so it ended because its head went away (a head
    restarted without GCS fault tolerance is a new cluster, and Ray ends the nodes of the old one):
    it re-joins, and keeps trying with a growing pause while the head is still away. A node that
    never got going gets START_TRIES tries. `failures` counts the quick ends in a row, this one
    included."""
    if ran_for > START_WINDOW:
        return random.uniform(0.5, 2)
    if failures >= (REJOIN_TRIES if joined_before else START_TRIES):
        return None
    return min(REJOIN_MAX_WAIT, random.uniform(1, 5) * 2 ** (failures - 1))


def stop_agent(agent: subprocess.Popen, grace: float = 10.0) -> None:
    """End the agent this command started: a worker whose node gave up must stop beating too, or
    its record stays in the fleet as a live worker that can run nothing."""
    if agent.poll() is not None:
        return
    agent.terminate()
    try:
        agent.wait(grace)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def pull_runtime_images(settings) -> None:
    """On a worker with Docker, every catalogue image, by the digest the control plane publishes,
    before the agent's registration (which makes the worker active), so no first run waits for a
    pull. A worker that cannot reach the control plane or get a published image stops here, saying
    why, rather than becoming active without them; a runtime with no published digest is left out
    (its runs are refused with a sentence) and said so."""
    if not settings.docker_host:
        return
    from .container import docker_client, prepull
    from .sandbox import SandboxError
    from .workerclient import Refused, WorkerClient

    started = time.monotonic()
    api = WorkerClient.for_settings(settings)
    try:
        try:
            digests = api.runtime_digests(budget=600)
        except Refused as e:
            if e.status != 404 or e.given_up:
                raise
            digests = {}  # a control plane older than digests: every Docker runtime is refused, each said so
        pulled, refused = prepull(docker_client(settings.docker_host), settings.image_registry, digests)
    except Exception as e:  # noqa: BLE001 - SandboxError, or the control plane away / refusing: as a sentence
        why = e if isinstance(e, SandboxError) else f"{type(e).__name__}: {e}"
        print(f"rgrid: this worker cannot get its runtime images: {why}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        api.close()
    for sentence in refused:
        print(f"rgrid: {sentence}", file=sys.stderr, flush=True)
    print(f"rgrid: {len(pulled)} runtime images present and checked after {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)


def main() -> None:
    from rgrid_service.raynet import ray_process_env

    from .settings import WorkerSettings

    settings = WorkerSettings()
    if settings.docker_host:
        from .container import sweep_leftovers

        # A container whose runner died (with the last boot, say) goes before anything new starts.
        sweep_leftovers(settings.docker_host, settings.work_root)
    pull_runtime_images(settings)
    worker_id = os.environ["RGRID_WORKER_ID"]
    head = os.environ["RGRID_RAY_ADDRESS"]
    slots = int(os.environ.get("RGRID_WORKER_SLOTS", "2"))
    base = dict(os.environ)
    remove_on_exit(token_to_file(base))
    env = ray_process_env(base)
    agent_env = {k: v for k, v in env.items() if k not in RAY_TOKEN_VARS}
    # The agent shares this process's output (the worker's log file, or the unit's journal). It
    # keeps beating while the Ray node re-joins a restarted head.
    agent = subprocess.Popen([sys.executable, "-m", "rgrid_runner.agent", "--worker-id", worker_id, "--slots", str(slots)],
                             env=agent_env, stdin=subprocess.DEVNULL)
    ip = node_ip(head)
    dashboard = settings.ray_dashboard
    failures, joined = 0, False
    while True:
        started = time.monotonic()
        code = subprocess.call(ray_node_command(worker_id, head, slots, ip, dashboard), env=env,
                               stdin=subprocess.DEVNULL)
        ran_for = time.monotonic() - started
        joined = joined or ran_for > START_WINDOW
        failures = 0 if ran_for > START_WINDOW else failures + 1
        wait = next_wait(ran_for, failures, joined)
        if wait is None:
            print(f"rgrid: the Ray node of {worker_id} could not start {failures} times in a row (exit {code}); "
                  f"giving up: see the Ray logs above, and check that the head at {head} is up", file=sys.stderr,
                  flush=True)
            stop_agent(agent)
            sys.exit(code or 1)
        what = "ended (its head went away?)" if ran_for > START_WINDOW else "failed while starting"
        print(f"rgrid: the Ray node of {worker_id} {what} after {ran_for:.0f} s (exit {code}); "
              f"joining {head} again in {wait:.0f} s", file=sys.stderr, flush=True)
        time.sleep(wait)


if __name__ == "__main__":
    main()

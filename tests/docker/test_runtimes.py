"""Every catalogue runtime, through the real runner in a real container (a private dockerd, the
catalogue images from the registry): a script using what the runtime promises, its outputs and
exit code as the runner commits them, and the guarantees: no network, a read-only image, /work and
a private /tmp the only writable places, the run's own uid, memory, process and file-size limits,
and timeout and cancel killing the whole container."""
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
from tests.docker.conftest import published_digests
from tests.httpstandin import server  # noqa: F401 - the fixture

pytestmark = pytest.mark.docker

MEMORY_MB = 256

# Each runtime's promise, checked by a script in its own language. It writes out/result.txt.
PROMISES = {
    "python:3.11": ("s.py", b"""
import sys
assert sys.version_info[:2] == (3, 11), sys.version
import os; os.makedirs("out", exist_ok=True)
open("out/result.txt", "w").write(sys.version.split()[0])
print("python", sys.version.split()[0])
"""),
    "python:3.10": ("s.py", b"""
import sys
assert sys.version_info[:2] == (3, 10), sys.version
import ctypes, sqlite3, ssl, zlib
assert zlib.decompress(zlib.compress(b"rgrid")) == b"rgrid" and ctypes.sizeof(ctypes.c_int64) == 8
db = sqlite3.connect(":memory:"); assert db.execute("select 1 + 1").fetchone() == (2,)
assert ssl.create_default_context().protocol >= ssl.PROTOCOL_TLS_CLIENT
import os; os.makedirs("out", exist_ok=True)
open("out/result.txt", "w").write(sys.version.split()[0])
print("python", sys.version.split()[0], ssl.OPENSSL_VERSION)
"""),
    "python-datascience": ("s.py", b"""
import os
os.environ["MPLCONFIGDIR"] = "/tmp/matplotlib"  # its font cache, not an output under HOME=/work
import numpy as np, pandas as pd, scipy.stats, sklearn.linear_model
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
x = np.arange(20.0); y = 3 * x + 1
fit = sklearn.linear_model.LinearRegression().fit(x.reshape(-1, 1), y)
frame = pd.DataFrame({"x": x, "y": y})
assert abs(fit.coef_[0] - 3) < 1e-9 and frame.y.sum() == 590 and scipy.stats.pearsonr(x, y)[0] > 0.999
os.makedirs("out", exist_ok=True)
plt.plot(x, y); plt.savefig("out/plot.png")
open("out/result.txt", "w").write(f"{fit.coef_[0]:.1f} numpy {np.__version__} pandas {pd.__version__}")
print("slope", fit.coef_[0])
"""),
    "ffmpeg": ("s.py", b"""
import os, subprocess, json
os.makedirs("out", exist_ok=True)
subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10",
                "-c:v", "mpeg4", "out/clip.mp4"], check=True)
subprocess.run(["ffmpeg", "-loglevel", "error", "-i", "out/clip.mp4", "-vf", "scale=32:24", "out/small.avi"], check=True)
probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", "out/small.avi"],
                       capture_output=True, check=True, text=True)
stream = json.loads(probe.stdout)["streams"][0]
open("out/result.txt", "w").write(f"{stream['width']}x{stream['height']} {stream['nb_frames']}")
"""),
    "node:20": ("s.js", b"""
const fs = require("fs");
if (!process.version.startsWith("v20.")) throw new Error("node " + process.version);
fs.mkdirSync("out", {recursive: true});
fs.writeFileSync("out/result.txt", process.version.split(".")[0]);
console.log("node", process.version);
"""),
}
EXPECTED = {"python:3.11": "3.11.", "python:3.10": "3.10.", "python-datascience": "3.0 numpy", "ffmpeg": "32x24 10", "node:20": "v20"}

# The guarantees, probed from inside: each prints one JSON object of what it saw.
PROBE_PY = b"""
import json, os, socket, errno
seen = {"uid": os.getuid(), "tmp_empty": os.listdir("/tmp") == []}
try:
    socket.create_connection(("1.1.1.1", 80), timeout=3); seen["network"] = True
except OSError as e:
    seen["network"] = False
for path in ("/usr/probe", "/etc/probe", "/probe"):
    try:
        open(path, "w"); seen["image_writable"] = path
    except OSError:
        pass
open("/tmp/probe", "w").write("x"); seen["tmp"] = True
open("/work/probe", "w").write("x"); seen["work"] = True
shm = 0  # bytes /dev/shm takes, in files below the file-size limit
try:
    for i in range(16):
        with open(f"/dev/shm/p{i}", "wb") as f:
            f.write(b"\\0" * (256 * 1024))
        shm += 256 * 1024
except OSError:
    pass
seen["shm_bytes"] = shm
seen["shm_options"] = [line.split()[3] for line in open("/proc/self/mounts") if line.split()[1] == "/dev/shm"]
try:
    with open("/tmp/big", "wb") as f:
        f.write(b"\\0" * (3 * 1024 * 1024))
    seen["fsize"] = "unlimited"
except OSError as e:
    seen["fsize"] = "limited"
kids = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            import time; time.sleep(3); os._exit(0)
        kids += 1
except OSError:
    pass
seen["forks"] = kids
print(json.dumps(seen))
"""
PROBE_JS = b"""
process.on("SIGXFSZ", () => {});  // as Python does: an over-long write fails instead of killing
const fs = require("fs"), net = require("net"), cp = require("child_process");
const seen = {uid: process.getuid(), tmp_empty: fs.readdirSync("/tmp").length === 0};
for (const p of ["/usr/probe", "/etc/probe", "/probe"]) { try { fs.writeFileSync(p, "x"); seen.image_writable = p; } catch (e) {} }
fs.writeFileSync("/tmp/probe", "x"); seen.tmp = true;
fs.writeFileSync("/work/probe", "x"); seen.work = true;
seen.shm_bytes = 0;  // bytes /dev/shm takes, in files below the file-size limit
try { for (let i = 0; i < 16; i++) { fs.writeFileSync(`/dev/shm/p${i}`, Buffer.alloc(256 * 1024)); seen.shm_bytes += 256 * 1024; } } catch (e) {}
seen.shm_options = fs.readFileSync("/proc/self/mounts", "utf8").split("\\n").map(l => l.split(" ")).filter(f => f[1] === "/dev/shm").map(f => f[3]);
try { fs.writeFileSync("/tmp/big", Buffer.alloc(3 * 1024 * 1024)); seen.fsize = "unlimited"; } catch (e) { seen.fsize = "limited"; }
let spawned = 0, settled = 0;
const connect = () => {
  const sock = net.connect({host: "1.1.1.1", port: 80});
  sock.setTimeout(3000);
  const done = (up) => { seen.network = up; seen.forks = spawned; console.log(JSON.stringify(seen)); process.exit(0); };
  sock.on("connect", () => done(true)); sock.on("error", () => done(false)); sock.on("timeout", () => done(false));
};
for (let i = 0; i < 200; i++) {
  const settle = () => { if (++settled === 200) connect(); };
  try {
    cp.spawn("sleep", ["3"]).on("spawn", () => { spawned++; settle(); }).on("error", settle);
  } catch (e) { settle(); }
}
"""
HOG_PY = b"x = bytearray(1024 * 1024 * 1024)\nprint('allocated')\n"
HOG_JS = b"const b = []; for (;;) b.push(Buffer.alloc(64 * 1024 * 1024, 1));\n"
# A script that starts a child of its own and waits: a timeout or a cancel must end both.
SLEEPER_PY = b"import subprocess, time\nsubprocess.Popen(['sleep', '600'])\nprint('started', flush=True)\ntime.sleep(600)\n"
SLEEPER_JS = b"require('child_process').spawn('sleep', ['600']);\nconsole.log('started');\nsetTimeout(() => {}, 600000);\n"


def _script(runtime: str, python: bytes, js: bytes) -> tuple[str, bytes]:
    return ("s.js", js) if runtime == "node:20" else ("s.py", python)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def work_root():
    with tempfile.TemporaryDirectory(prefix="rgrid-docker-run-", dir="/tmp") as d:
        yield Path(d)


def _run(server, docker_grid, work_root: Path, runtime: str, name: str, script: bytes, timeout: int = 120,
         outputs: tuple[str, ...] = (), finish=(200, {"committed": True}), digest: str | None = None,
         ) -> tuple[str, dict, bytes]:
    """digest: the image digest the claim names (default: the one the builder recorded)."""
    engine, registry = docker_grid
    server.objects["/blobs/script"] = script
    claim = dict(attempt=1, script=name, args=[], env={"GREETING": "hi"}, runtime=runtime, timeout_seconds=timeout,
                 inputs=[dict(name=name, sha256=_sha(script), size=len(script), url=server.url + "/blobs/script")],
                 image_digest=digest or published_digests(registry)[runtime])
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, claim))
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (200, {"kept": True}))
    server.answer("POST", wire.OUTPUT_URLS.format(id="ex1", attempt=1),
                  (200, {"urls": [{"path": p, "url": server.url + "/outputs/" + p} for p in outputs]}))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), finish)
    settings = WorkerSettings(work_root=str(work_root), input_cache_mb=0, lease_check_interval_seconds=0.2,
                              docker_host=engine.host, image_registry=registry.address,
                              sandbox_memory_mb=MEMORY_MB, sandbox_max_processes=64, sandbox_max_file_mb=1)
    result = run_execution("ex1", WorkerClient(server.url, "rgw_t", outage_budget=3.0), settings)
    finishes = server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))
    body = json.loads(finishes[-1]["body"]) if finishes else {}
    # What the script printed: renews carry what it wrote while it ran, the finish what was read
    # after it ended (all of a quick script's output, usually).
    carried = [json.loads(r["body"])["logs"] for r in server.requests("POST", wire.RENEW.format(id="ex1", attempt=1))]
    logs = b"".join(base64.b64decode(c["data_b64"]) for chunks in [*carried, body.get("logs", [])] for c in chunks)
    return result, body, logs


def _containers(docker_grid) -> list:
    return docker_grid[0].client().containers.list(all=True, filters={"label": "org.rgrid.run"})


@pytest.mark.parametrize("runtime", list(PROMISES))
def test_each_runtime_runs_a_script_using_what_it_promises(server, docker_grid, work_root, runtime):
    name, script = PROMISES[runtime]
    # The worker asks for the script's outputs' upload addresses; the stand-in gives one per path.
    outs = {"python-datascience": ("out/plot.png",), "ffmpeg": ("out/clip.mp4", "out/small.avi")}.get(runtime, ())
    result, body, logs = _run(server, docker_grid, work_root, runtime, name, script,
                              outputs=("out/result.txt", *outs))
    assert result == "succeeded", (body, logs)
    assert body["exit_code"] == 0
    assert {o["path"] for o in body["outputs"]} == {"out/result.txt", *outs}
    assert server.objects["/outputs/out/result.txt"].decode().startswith(EXPECTED[runtime])
    if runtime == "python-datascience":
        assert server.objects["/outputs/out/plot.png"].startswith(b"\x89PNG")
    assert _containers(docker_grid) == []  # removed after the run
    assert list(work_root.iterdir()) == []


UIDS_SEEN: set[int] = set()


@pytest.mark.parametrize("runtime", list(PROMISES))
def test_each_runtime_keeps_the_sandbox_guarantees(server, docker_grid, work_root, runtime):
    name, probe = _script(runtime, PROBE_PY, PROBE_JS)
    result, body, logs = _run(server, docker_grid, work_root, runtime, name, probe, outputs=("probe",))
    assert result == "succeeded", (body, logs)
    seen = json.loads(logs.decode().strip().splitlines()[-1])
    assert seen["network"] is False
    assert "image_writable" not in seen  # the image is read-only: /work and /tmp are the writable places
    assert seen["tmp"] and seen["work"]
    assert seen["tmp_empty"]  # a /tmp of its own, not the worker's
    assert seen["uid"] >= 200_000  # the run's own uid, not root nor the runner's
    assert seen["uid"] not in UIDS_SEEN  # nor an earlier run's
    UIDS_SEEN.add(seen["uid"])
    assert seen["fsize"] == "limited"  # 1 MB file-size limit
    # /dev/shm: not Docker's 64 MB default but a private 1 MB without exec (semaphores fit, data does not).
    assert seen["shm_bytes"] <= 1024 * 1024, seen
    assert len(seen["shm_options"]) == 1 and "noexec" in seen["shm_options"][0].split(","), seen
    assert seen["forks"] < 64  # process limit


@pytest.mark.parametrize("runtime", list(PROMISES))
def test_each_runtime_is_stopped_at_its_memory_limit(server, docker_grid, work_root, runtime):
    name, hog = _script(runtime, HOG_PY, HOG_JS)
    result, body, logs = _run(server, docker_grid, work_root, runtime, name, hog)
    assert result == "failed", (body, logs)
    assert body["reason"] == f"Out of memory: the script exceeded the {MEMORY_MB} MB memory limit."
    assert _containers(docker_grid) == []


@pytest.mark.parametrize("runtime", list(PROMISES))
def test_the_timeout_kills_the_whole_container(server, docker_grid, work_root, runtime):
    name, script = _script(runtime, SLEEPER_PY, SLEEPER_JS)
    result, body, logs = _run(server, docker_grid, work_root, runtime, name, script, timeout=3)
    assert result == "timed_out", (body, logs)
    assert body["reason"] == "Timed out after 3 s (raise it with --timeout)."
    assert b"started" in logs
    assert _containers(docker_grid) == []  # the script and its child went with it


@pytest.mark.parametrize("runtime", list(PROMISES))
def test_a_canceled_run_is_killed_with_its_container(server, docker_grid, work_root, runtime):
    """Cancel reaches a worker as a renew answered 409: the runner kills the container and commits nothing."""
    name, script = _script(runtime, SLEEPER_PY, SLEEPER_JS)
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (409, {"detail": "Run ex1 was canceled."}))
    result, body, logs = _run(server, docker_grid, work_root, runtime, name, script)
    assert result == "fenced"
    assert body == {}
    assert _containers(docker_grid) == []


def test_containers_whose_runner_has_gone_are_removed(docker_grid, work_root):
    """A runner killed with its container running leaves the container behind (bubblewrap dies with
    its parent, a container does not): the sweep (node start, the agent every minute) removes the
    containers whose run lock nobody holds, and leaves a live run's and another work root's alone."""
    import fcntl
    import os

    from rgrid_core.runtimes import CATALOGUE
    from rgrid_runner.container import pinned_reference, remove_leftovers, run_labels

    engine, registry = docker_grid
    client = engine.client()
    # The engine holds the images by their recorded digests only (as a worker does), not by tag.
    image = pinned_reference(CATALOGUE["python:3.11"], registry.address, published_digests(registry)["python:3.11"])
    held, gone = work_root / "ex-live.w-1.lock", work_root / "ex-dead.w-1.lock"
    fd = os.open(held, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elsewhere = Path("/tmp/rgrid-another-work-root/ex.w-9.lock")
    made = []
    try:
        for lock in (held, gone, elsewhere):
            c = client.containers.create(image, ["python3", "-c", "import time; time.sleep(600)"],
                                         network_mode="none", labels=run_labels(lock))
            c.start()
            made.append(c)
        removed = remove_leftovers(client, work_root)
        assert removed == [made[1].name]
        left = {c.name for c in _containers(docker_grid)}
        assert made[0].name in left and made[2].name in left and made[1].name not in left
        assert not gone.exists()  # the probe never creates a lock file
    finally:
        os.close(fd)
        for c in made:
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - removed by the sweep
                pass


def test_stdout_and_stderr_keep_their_order_when_the_follower_starts_late(server, docker_grid, work_root,
                                                                           monkeypatch):
    """The follower starts a second late (a loaded worker), so the whole output is in the engine's
    log before it reads any: it still reaches the run's log in the order written. (Lines are 20 ms
    apart: the engine copies stdout and stderr in goroutines of their own, so lines written
    microseconds apart on different outputs can swap in its log before the worker reads it.)"""
    import time

    from rgrid_runner.container import ContainerRun

    frames = ContainerRun._frames

    def late(self):
        time.sleep(1.0)
        yield from frames(self)

    monkeypatch.setattr(ContainerRun, "_frames", late)
    script = (b"import sys, time\nfor i in range(20):\n"
              b"    print(f'line {i}', file=(sys.stderr if i % 2 else sys.stdout), flush=True)\n    time.sleep(0.02)\n")
    result, body, _ = _run(server, docker_grid, work_root, "python:3.11", "s.py", script)
    assert result == "succeeded", body
    carried = [json.loads(r["body"])["logs"] for r in server.requests("POST", wire.RENEW.format(id="ex1", attempt=1))]
    lines = [(c["stream"], line) for chunks in [*carried, body.get("logs", [])] for c in chunks
             for line in base64.b64decode(c["data_b64"]).decode().splitlines()]
    assert lines == [("stderr" if i % 2 else "stdout", f"line {i}") for i in range(20)]


def test_a_failing_script_keeps_its_exit_code_and_stderr(server, docker_grid, work_root):
    script = b"import sys\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n"
    result, body, logs = _run(server, docker_grid, work_root, "python:3.11", "s.py", script)
    assert result == "failed" and body["exit_code"] == 3
    assert body["reason"] == "The script exited with code 3."
    assert b"bad input" in logs


@pytest.mark.parametrize("round_", range(5))  # a quick script's whole output, again and again
def test_the_script_sees_its_environment(server, docker_grid, work_root, round_):
    script = b"import os\nprint(os.environ['GREETING'], os.environ['HOME'], os.getcwd(), os.environ['RGRID_ATTEMPT'])\n"
    result, body, logs = _run(server, docker_grid, work_root, "python:3.11", "s.py", script)
    assert result == "succeeded"
    assert logs.strip() == b"hi /work /work 1"


def test_a_worker_pulls_every_runtime_image_before_it_beats(server, docker_grid, capsys):
    """rgrid_runner.node's step before the agent starts: the control plane's digests, then each
    image the worker lacks pulled by its digest; a registry without the images stops the worker
    with a sentence instead of a worker without them."""
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_runner.container import pinned_reference
    from rgrid_runner.node import pull_runtime_images

    engine, registry = docker_grid
    client = engine.client()
    digests = published_digests(registry)
    server.answer("GET", wire.RUNTIME_DIGESTS, (200, {"digests": digests}))
    image = pinned_reference(CATALOGUE["node:20"], registry.address, digests["node:20"])
    client.images.remove(image)
    settings = dict(docker_host=engine.host, api_url=server.url, worker_token="rgw_t")
    pull_runtime_images(WorkerSettings(image_registry=registry.address, **settings))
    assert registry.address + "/" + CATALOGUE["node:20"].repository + "@" + digests["node:20"] in \
        client.images.get(image).attrs["RepoDigests"]
    assert f"{len(CATALOGUE)} runtime images present and checked" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pull_runtime_images(WorkerSettings(image_registry="127.0.0.1:9", **settings))
    assert "this worker cannot get its runtime images: The image of runtime python:3.11 could not be pulled" \
        in capsys.readouterr().err


def test_a_tag_pushed_over_in_the_registry_is_never_run(server, docker_grid, work_root, tmp_path):
    """Somebody on the private network pushes another image over python:3.11's tag: a run still
    gets the image its builder recorded (pulled by digest); a registry that holds only the tag
    pushed over (not the recorded manifest) refuses the run with the sentence. Its own registry,
    so the image cache shared by the sessions is never touched."""
    from rgrid_core.runtimes import CATALOGUE
    from rgrid_runner.container import pinned_reference
    from rgrid_service.dockerhost import Registry

    engine, shared = docker_grid
    client = engine.client()
    py, other = CATALOGUE["python:3.11"], CATALOGUE["node:20"]
    digests = published_digests(shared)

    def push(image: str, repo: str, tag: str) -> str:
        client.images.get(image).tag(repo, tag)
        lines = list(client.images.push(repo, tag=tag, stream=True, decode=True))
        assert not [line for line in lines if "error" in line], lines
        client.images.remove(f"{repo}:{tag}")  # the worker below holds nothing of this registry
        return next(line["aux"]["Digest"] for line in lines if "aux" in line)

    with Registry(tmp_path / "storage", tmp_path / "registry") as registry:
        repo = f"{registry.address}/{py.repository}"
        recorded = push(pinned_reference(py, shared.address, digests["python:3.11"]), repo, py.tag)
        pushed_over = push(pinned_reference(other, shared.address, digests["node:20"]), repo, py.tag)
        assert registry.digest(py.repository, py.tag) == pushed_over != recorded
        script = b"import sys\nprint('python', sys.version_info[:2])\n"
        result, body, logs = _run(server, (engine, registry), work_root, "python:3.11", "s.py", script,
                                  digest=recorded)
        assert result == "succeeded", (body, logs)
        assert b"python (3, 11)" in logs  # node:20's image has no python3: this is the recorded image

        # A registry holding only the tag pushed over, not the manifest recorded (a digest that no
        # registry and no engine here holds: the same image pushed anywhere has the same digest).
        never_built = "sha256:" + hashlib.sha256(b"an image this registry never got").hexdigest()
        server.answers.clear()  # the stand-in repeats its last claim answer: this run's claim only
        result, body, logs = _run(server, (engine, registry), work_root, "python:3.11", "s.py", script,
                                  digest=never_built)
        assert result == "sandbox-error" and body["status"] == "failed"
        assert body["reason"].startswith(f"The image of runtime python:3.11 in the registry at {registry.address} "
                                         f"is not the one its builder recorded ({never_built})")
        assert "rebuild the runtime images" in body["reason"]

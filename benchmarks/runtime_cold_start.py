"""Cold start of the Docker runtime (issue 12): the first run on a freshly started worker with its
runtime image pre-pulled (as rgrid_runner.node does before the worker becomes active), the first
run without it (the image pulled from the registry during the run, as ensure_image does), and a
warm run (the same worker's next run).

A "freshly started worker" is a Docker engine started now on an empty data root, and a Docker
client opened now. A run is the runner's container part of a run, as rgrid_runner.runner does it:
the image ensured, /work handed to the run's uid, the container created and started, its output
followed to its end, its exit read and the container removed. The script prints one line. What
the runner does around it (claim, inputs, finish) is the same in the three cases and left out.

    flock /tmp/rgrid-heavy.lock .venv/bin/python -m benchmarks.runtime_cold_start [--repeat 3]
        [--runtimes python:3.11,python-datascience]

Needs root and Debian's docker.io, docker-registry and mmdebstrap; images are built into the
registry under ~/.cache/rgrid/registry first if missing. Prints the figures and whether "first
run with pre-pull within 2 s of warm" holds (issue 12's bar), per runtime.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from rgrid_core.runtimes import CATALOGUE
from rgrid_runner import container, sandbox
from rgrid_service import images
from rgrid_service.dockerhost import DockerEngine, Registry

SCRIPTS = {"node:20": ("s.js", "console.log('hello from', process.version);\n")}
PY_SCRIPT = ("s.py", "import sys\nprint('hello from', sys.version.split()[0])\n")
BAR_SECONDS = 2.0


def one_run(client, registry: str, name: str, work: Path) -> float:
    """Seconds for one run's container part, the output checked."""
    runtime = CATALOGUE[name]
    script, text = SCRIPTS.get(name, PY_SCRIPT)
    workdir = Path(tempfile.mkdtemp(prefix="rgrid-bench-run-", dir=work))
    (workdir / script).write_text(text)
    limits = sandbox.Limits(wall_seconds=60, cpu_seconds=61, memory_mb=512, max_processes=64, max_file_mb=64)
    uid = sandbox.sandbox_uid()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    chunks: list[bytes] = []
    started = time.perf_counter()
    image = container.ensure_image(client, runtime, registry)
    sandbox.hand_over(workdir, uid)
    run = container.ContainerRun(client, image, runtime, script, [], workdir, sandbox.script_env({}), limits, uid,
                                 out_w, err_w)
    readers = [threading.Thread(target=lambda fd=fd: _drain(fd, chunks)) for fd in (out_r, err_r)]
    for reader in readers:
        reader.start()
    code = run.wait(60)
    for reader in readers:
        reader.join(60)
    run.close()
    seconds = time.perf_counter() - started
    shutil.rmtree(workdir, ignore_errors=True)
    said = b"".join(chunks)
    if code != 0 or b"hello from" not in said:
        raise SystemExit(f"{name}: the run failed (exit {code}): {said!r}")
    return seconds


def _drain(fd: int, into: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while data := pipe.read(65536):
            into.append(data)


def fresh_worker(base: Path, registry: Registry, name: str, prepull: bool, warm_runs: int) -> dict:
    """A new engine on an empty data root; optionally the image pulled first (not timed, as at
    boot); then its first run and warm_runs more."""
    root = Path(tempfile.mkdtemp(prefix="engine-", dir=base))
    try:
        with DockerEngine(root) as engine:
            pull = None
            if prepull:
                client = engine.client()
                began = time.perf_counter()
                container.prepull(client, registry.address, [name])
                pull = time.perf_counter() - began
                client.close()
            began = time.perf_counter()
            client = container.docker_client(engine.host)  # the runner's client, opened by its first run
            opened = time.perf_counter() - began
            first = opened + one_run(client, registry.address, name, base)
            warm = [one_run(client, registry.address, name, base) for _ in range(warm_runs)]
            client.close()
            return {"first": first, "warm": warm, "pull": pull}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh workers per runtime and case")
    parser.add_argument("--warm", type=int, default=3, help="warm runs after each first run")
    parser.add_argument("--runtimes", default="python:3.11,python-datascience")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    base = Path(tempfile.mkdtemp(prefix="rgrid-coldstart-", dir="/tmp"))
    holds = True
    try:
        with DockerEngine(base / "builder") as builder, Registry(images.registry_storage(), base) as registry:
            images.build_all(builder.client(), registry, names, report=lambda line: None)
            builder.client().close()
            for name in names:
                pre, cold = [], []
                for _ in range(args.repeat):
                    pre.append(fresh_worker(base, registry, name, prepull=True, warm_runs=args.warm))
                    cold.append(fresh_worker(base, registry, name, prepull=False, warm_runs=0))
                warm = [w for r in pre for w in r["warm"]]
                first_pre = statistics.median(r["first"] for r in pre)
                first_cold = statistics.median(r["first"] for r in cold)
                warm_median = statistics.median(warm)
                within = first_pre - warm_median <= BAR_SECONDS
                holds = holds and within
                print(f"{name}: {args.repeat} fresh workers per case, medians (min-max)")
                print(f"  pre-pull at boot (not in the run): {_span([r['pull'] for r in pre])}")
                print(f"  first run, image pre-pulled:       {_span([r['first'] for r in pre])}")
                print(f"  first run, pulled during the run:  {_span([r['first'] for r in cold])}")
                print(f"  {f'warm run ({len(warm)} runs):':<35}{_span(warm)}")
                print(f"  first with pre-pull - warm = {first_pre - warm_median:+.2f} s; "
                      f"without pre-pull - warm = {first_cold - warm_median:+.2f} s")
                print(f"  first run with pre-pull within {BAR_SECONDS:.0f} s of warm: {'yes' if within else 'NO'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"issue 12's bar (every runtime measured): {'met' if holds else 'NOT met'}")
    return 0


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    raise SystemExit(main())

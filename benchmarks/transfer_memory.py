"""Peak memory of the CLI and of the runner while a large file travels both ways.

    python benchmarks/transfer_memory.py [--mb 500]

Uses the running local grid (`rgrid local up`). The script copies its input to an output, so the
file goes laptop -> S3 -> worker -> S3 -> laptop. Peak RSS is sampled from /proc every 50 ms: the
CLI process, and every Ray worker process of the grid (the runner executes inside one).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RGRID = str(Path(sys.executable).with_name("rgrid"))


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def ray_worker_pids() -> list[int]:
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::"):
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        tmp = Path(tmp)
        big = tmp / "big.bin"
        with open(big, "wb") as f:
            for _ in range(opts.mb):
                f.write(os.urandom(1024 * 1024))
        (tmp / "copy.py").write_text(
            "import shutil, sys\nshutil.copyfile(sys.argv[1], 'copy.bin')\nprint('copied')\n"
        )
        peak = {"cli": 0, "runner": 0}
        baseline_runner = max((rss_kb(p) for p in ray_worker_pids()), default=0)
        started = time.monotonic()
        proc = subprocess.Popen([RGRID, "run", "--output-dir", str(tmp / "out"), "copy.py", str(big)], cwd=tmp)
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak["cli"] = max(peak["cli"], rss_kb(proc.pid))
                peak["runner"] = max([peak["runner"], *(rss_kb(p) for p in ray_worker_pids())])
                time.sleep(0.05)

        t = threading.Thread(target=sample)
        t.start()
        code = proc.wait()
        done.set()
        t.join()
        elapsed = time.monotonic() - started
        same = (tmp / "out" / "copy.bin").stat().st_size == big.stat().st_size if code == 0 else False
        print(f"file: {opts.mb} MB, exit code {code}, round trip {elapsed:.1f} s, output intact: {same}")
        print(f"peak RSS  CLI: {peak['cli'] / 1024:.0f} MB   runner (Ray worker process): {peak['runner'] / 1024:.0f} MB "
              f"(idle Ray worker before: {baseline_runner / 1024:.0f} MB)")
        print(f"ratio of file size to peak RSS: CLI {opts.mb / (peak['cli'] / 1024):.1f}x, "
              f"runner {opts.mb / (peak['runner'] / 1024):.1f}x")


if __name__ == "__main__":
    main()

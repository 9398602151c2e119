"""Idle CPU of the local grid: what each of its processes burns while nothing runs.

    .venv/bin/python benchmarks/idle_grid.py [--workers 2] [--settle 20] [--seconds 60]

Starts a throwaway local grid as `rgrid local up` does (2 worker nodes by default, product
timings), waits --settle seconds for start-up work to end, then reads each grid process's CPU
time from /proc before and after --seconds and prints the share of one core per part of the grid
(only processes of this grid: its home is in their command line or environment). Issue #13's goal:
the idle grid as a whole under 5 % of a core.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grid import command_line, describe, idle_cpu, idle_report, load_line, local_grid  # noqa: E402

GOAL_PERCENT = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="worker nodes (default 2, as `rgrid local up`)")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds to wait after start-up (default 20)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds to sample (default 60)")
    ap.add_argument("--processes", action="store_true", help="also list every process with its share")
    opts = ap.parse_args()

    print("idle CPU of the local grid")
    print(load_line() + "  [before]", flush=True)
    with local_grid(workers=opts.workers) as g:
        print("  " + describe(g))
        time.sleep(opts.settle)
        procs: list = []
        percent, wall = idle_cpu(g.home, opts.seconds, procs)
    print(load_line() + "  [after]")
    print(idle_report(percent, wall))
    if opts.processes:
        print(f"every process of the grid ({len(procs)}), % of one core:")
        for used, role, cmd in sorted(procs, key=lambda p: -p[0]):
            print(f"    {used:5.2f} %  {role:32s} {cmd[:110]}")
    total = sum(percent.values())
    print(f"goal (issue #13): the idle grid under {GOAL_PERCENT:.0f} % of a core: "
          f"{'met' if total < GOAL_PERCENT else 'NOT met'} ({total:.1f} %)")
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    main()

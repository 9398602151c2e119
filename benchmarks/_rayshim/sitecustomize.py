"""Benchmark-only shim that lets Ray's own Jobs API work on a benchmark grid, for the side-by-side
comparison in benchmarks/dispatch_overhead.py. benchmarks/_grid.py puts this directory on the
PYTHONPATH of the grid's processes only when asked (local_grid(ray_jobs=True)); it acts in exactly
one process, the head's dashboard agent, which RGrid's own path (API, orchestrator, the runner
actors) does not go through.

Why: on a submission the dashboard agent calls ray.init("127.0.0.1:<gcs port>"), and Ray rewrites
127.0.0.1 to the machine's other interface address (here 192.0.2.2); the GCS is not reached there,
so `submit_job` hangs and ends in HTTP 504 (dashboard_agent.log: "Connecting to existing Ray
cluster at address: 192.0.2.2:..."; dashboard_agent.err: "Failed to connect to GCS"). RGrid pins
loopback in the processes it starts itself (rgrid_service.raynet.pin_loopback), but Ray starts the
agent. This applies the same pin there.
"""
import os
import sys

_argv = getattr(sys, "orig_argv", sys.argv)
if os.environ.get("RGB_PIN_AGENT_LOOPBACK") == "1" and any(a.endswith("dashboard/agent.py") for a in _argv):
    from rgrid_service.raynet import pin_loopback as _pin

    _pin()

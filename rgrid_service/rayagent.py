"""`python -m rgrid_service.rayagent <ray's dashboard/agent.py> <its arguments>`: Ray's per-node
dashboard agent with none of its modules, for nodes of a cluster without a dashboard.

Ray starts the agent on every node and ends the raylet with it, so it cannot be left out. Its
modules (reporter, events, logs, jobs, health) serve the dashboard: without one they poll psutil
every few seconds and ask the GCS every second for a dashboard address that never comes (logging an
error each time). Ray loads none of them when its dashboard extras are missing (`pip install ray`
without `[default]`); this runs the agent as if they were. rgrid_service.raynet's `--no-dashboard`
puts this module in front of the agent's path in the command the raylet starts it with.
"""
from __future__ import annotations

import runpy
import sys


def main() -> None:
    import ray._private.utils as private_utils
    import ray.dashboard.utils as dashboard_utils

    def no_dashboard() -> ImportError:
        return ImportError("the cluster runs without Ray's dashboard (rgrid_service.raynet --no-dashboard)")

    private_utils.get_dashboard_dependency_error = no_dashboard
    dashboard_utils.get_dashboard_dependency_error = no_dashboard
    agent_path = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(agent_path, run_name="__main__")


if __name__ == "__main__":
    main()

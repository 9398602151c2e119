"""A Ray driver in a process of its own, so each try starts with Ray's authentication state fresh:
with the grid's token file, with a wrong token, or with none (as anything on the network would)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DRIVER = r"""
import json, sys
from rgrid_service.raynet import pin_loopback
pin_loopback()
import ray
try:
    ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", namespace="probe", log_to_driver=False,
             logging_level="ERROR")
except Exception as e:
    print("REFUSED " + json.dumps([type(e).__name__, str(e)]))
    sys.exit(3)
nodes = [{"worker": n["Labels"].get("rgrid-worker"), "alive": n["Alive"], "raylet_port": n["NodeManagerPort"],
          "object_manager_port": n["ObjectManagerPort"]} for n in ray.nodes()]
print("NODES " + json.dumps(nodes))
ray.shutdown()
"""

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def try_driver(address: str, home: Path, auth: dict[str, str], timeout: float = 120) -> tuple[str, object, str]:
    """("NODES", [node, ...], stderr) if a driver with `auth` (RAY_AUTH_* variables) joins the
    cluster at `address`, ("REFUSED", [exception type, message], stderr) if ray.init raised. `home`
    is the driver's HOME, so no ~/.ray/auth_token of the machine is found."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS and not k.startswith("RGRID_")}
    env.update(auth, HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    done = subprocess.run([sys.executable, "-c", DRIVER, address], env=env, capture_output=True, text=True,
                          timeout=timeout)
    for line in done.stdout.splitlines():
        for kind in ("NODES", "REFUSED"):
            if line.startswith(kind + " "):
                return kind, json.loads(line[len(kind) + 1:]), done.stderr
    raise AssertionError(f"the driver said neither (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")

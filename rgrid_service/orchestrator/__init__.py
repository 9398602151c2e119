"""The orchestrator process: APScheduler jobs that each gather a snapshot, ask a pure policy, and act.

- dispatch (dispatch.py): queued executions -> placement -> a call on each worker node's runner actor;
- sweep (health.py): heartbeats and Ray's node states -> dead-worker rule -> declare dead;
- provisioning (fleet.py): queue and workers -> provisioning, billing-hour and boot-timeout rules
  -> worker records -> one fleet update at a time, off the scheduler's thread;
- retention (retention.py): ended runs and kept inputs -> retention rule -> files deleted from the store.

It never runs scripts and never decides an execution's outcome. The runner's atomic claim makes a
duplicate dispatch harmless, so after a restart it simply carries on from the database.
"""
from __future__ import annotations

import logging

log = logging.getLogger("rgrid.orchestrator")


def connect_ray(address: str, token_file: str | None) -> None:
    """Join the Ray cluster at `address` as a driver, authenticated with the cluster's token file."""
    if not token_file:
        raise ValueError("RGRID_RAY_TOKEN_FILE is not set: the Ray cluster runs with token authentication, "
                         "so name the file holding its token.")
    import ray

    from ..raynet import pin_loopback, use_token

    use_token(token_file)
    kwargs = {}
    if address.startswith(("127.", "localhost")):
        pin_loopback()
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(address=address, namespace="rgrid", log_to_driver=False, logging_level=logging.WARNING, **kwargs)

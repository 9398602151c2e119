"""Keep every Ray process of a loopback cluster on 127.0.0.1.

Ray rewrites a node IP of 127.0.0.1 into "the remotely reachable address" (the machine's other
interface). The local grid and the tests must never leave loopback, so processes we start pin the
address resolution to loopback before Ray reads it. Production nodes pass their private-network IP
and are untouched (the pin only applies when the requested address is loopback).
"""
from __future__ import annotations

import sys

LOOPBACK = "127.0.0.1"


def pin_loopback() -> None:
    import ray._private.services as services

    original_resolve = services.resolve_ip_for_localhost
    original_get = services.get_node_ip_address

    def resolve_ip_for_localhost(host: str):
        return LOOPBACK if host in ("127.0.0.1", "localhost") else original_resolve(host)

    def get_node_ip_address(address=None):
        import ray._private.worker as worker

        if worker._global_node is not None:
            return worker._global_node.node_ip_address
        if address is None or str(address).startswith(("127.", "localhost")):
            return LOOPBACK
        return original_get(address)

    services.resolve_ip_for_localhost = resolve_ip_for_localhost
    services.get_node_ip_address = get_node_ip_address


NO_CLIENT_SERVER = "--no-ray-client-server"


def main() -> None:
    """`python -m rgrid_service.raynet start ...`: the `ray` CLI with loopback pinned.

    `--no-ray-client-server` (ours) starts a head without the Ray client server, which the grid
    does not use: `ray start` has no switch for it (it starts one whenever grpc is installed)."""
    pin_loopback()
    import ray.scripts.scripts as scripts

    if NO_CLIENT_SERVER in sys.argv:
        sys.argv.remove(NO_CLIENT_SERVER)
        scripts.get_ray_client_dependency_error = lambda: ImportError("the Ray client server is not wanted")
    sys.argv[0] = "ray"
    scripts.main()



def ray_process_env(base: dict[str, str]) -> dict[str, str]:
    """Environment for every Ray process we start: no usage stats, and no way off the machine.

    Ray's dashboard probes cloud metadata (169.254.169.254) over `requests` even with usage stats
    off; pointing HTTP(S) proxies at a closed loopback port makes such probes fail on 127.0.0.1.
    """
    env = dict(base)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    dead = "http://127.0.0.1:9"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[var] = dead
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


if __name__ == "__main__":
    main()

"""Where the CLI's requests go: a configured control plane, else the local grid.

The local grid is found through its state file (`rgrid_core.localstate`) and never imported:
`rgrid status` on a warm grid costs one small file read, then one HTTP request.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rgrid_core import localstate

from ..config import Endpoint, remote_endpoint, rgrid_home
from .output import fail, say

if TYPE_CHECKING:
    from ..client import Client

LOCAL_WORKERS = 2  # what `rgrid run` starts when no grid runs


def endpoint(start_local: bool = False) -> Endpoint:
    remote = remote_endpoint()
    if remote:
        return remote
    home = rgrid_home()
    state = localstate.is_running(home)
    if state is None:
        if not start_local:
            fail("No local grid is running and no remote control plane is configured. "
                 "Start one with `rgrid local up`.")
        from .local import start

        state = start(home, workers=LOCAL_WORKERS,
                      title="No control plane configured: starting a local grid on this machine…")
        say(f"Local grid started ({LOCAL_WORKERS} workers). Stop it with `rgrid local down`.")
    return Endpoint(state.api_url, state.api_key, local=True)


def client(start_local: bool = False) -> "Client":
    from ..client import Client  # httpx is imported only by commands that talk to the API

    ep = endpoint(start_local)
    return Client(ep.api_url, ep.api_key)


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs), an API error becoming `rgrid: <sentence>` and exit 1."""
    from ..client import ApiError

    try:
        return fn(*args, **kwargs)
    except ApiError as e:
        fail(str(e))

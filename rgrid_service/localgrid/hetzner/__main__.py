"""python -m rgrid_service.localgrid.hetzner --port P --state-dir D: serve the stand-in on 127.0.0.1.

Writes <state dir>/endpoint.json ({"url", "pid"}) once listening, so a starter can use --port 0.
On SIGTERM it stops serving; booted workers keep running unless --kill-servers-on-exit (their
process groups are in state.json, so a restarted stand-in can still delete those servers).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from .api import create_app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rgrid_service.localgrid.hetzner",
                                 description="Local stand-in for the Hetzner Cloud API (servers boot local workers).")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (0: pick a free one; see endpoint.json)")
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--boot-delay", type=float, default=2.0, help="seconds from create/poweron to running")
    ap.add_argument("--action-delay", type=float, default=0.0, help="seconds until other actions succeed")
    ap.add_argument("--max-servers", type=int, default=None, help="server quota (403 resource_limit_exceeded)")
    ap.add_argument("--kill-servers-on-exit", action="store_true")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            raise ValueError
    except ValueError:
        ap.error(f"--host must be a loopback address, not {args.host!r}")

    app = create_app(args.state_dir, boot_delay=args.boot_delay, action_delay=args.action_delay,
                     max_servers=args.max_servers, kill_servers_on_exit=args.kill_servers_on_exit)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # connections queue from now on, so endpoint.json is usable as soon as it exists
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1"
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="on"))

    endpoint = args.state_dir / "endpoint.json"
    tmp = endpoint.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, endpoint)
    print(f"Hetzner API stand-in on {url} (state in {args.state_dir})", flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; answering that with a
    # no-op makes a SIGTERM an orderly exit 0 (the lifespan has already stopped the ticker by then).
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())

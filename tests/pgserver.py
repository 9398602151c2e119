"""A real, throwaway PostgreSQL cluster started by the tests (initdb + pg_ctl, 127.0.0.1 only,
a free port), shared by the DB tests and the chaos suite. `start_cluster` also starts one inside a
network namespace, on that namespace's address (the chaos suite's partition scenario)."""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# A time zone far from UTC for the cluster default: the engine must pin the session to UTC itself,
# otherwise the "naive timestamps are UTC" rule silently breaks (see test_db_now_is_utc).
PG_CLUSTER_TIMEZONE = "Pacific/Kiritimati"  # UTC+14


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([0-9.]+)/bin/", path)
        return tuple(int(x) for x in m.group(1).split(".") if x) if m else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


@dataclass
class PgServer:
    port: int
    base: Path
    bindir: Path
    opts: str = ""
    host: str = "127.0.0.1"
    netns: str | None = None  # the network namespace its postmaster runs in

    @property
    def data(self) -> Path:
        return self.base / "data"

    def restart(self, mode: str = "immediate") -> None:
        """`pg_ctl restart -m immediate`: the crash-like restart the chaos suite injects."""
        _run_as_owner(
            [str(self.bindir / "pg_ctl"), "restart", "-w", "-t", "60", "-m", mode, "-D", str(self.data),
             "-l", str(self.base / "server.log"), "-o", self.opts],
            cwd=self.base, log=self.base / "tools.log", netns=self.netns,
        )

    def url(self, database: str = "rgrid") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def admin(self):
        """An autocommit psycopg connection to the `postgres` maintenance database."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname="postgres", autocommit=True
        )


def _run_as_owner(args: list[str], cwd: Path, log: Path, timeout: float = 120, netns: str | None = None) -> None:
    """Run a PostgreSQL tool, as the `postgres` system user when we are root (initdb refuses root);
    with netns, inside that network namespace (entered as root, then setpriv drops to postgres)."""
    kwargs: dict = {}
    if netns:
        args = ["ip", "netns", "exec", netns, "setpriv", "--reuid=postgres", "--regid=postgres",
                "--clear-groups", *args]
    elif os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        kwargs = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    env = dict(os.environ, LC_ALL="C", LANG="C")
    if os.geteuid() == 0:
        env["HOME"] = str(cwd)
    with open(log, "ab") as out:
        proc = subprocess.run(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout, **kwargs,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{Path(args[0]).name} failed with exit code {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
        )


def pg_server_fixture():
    pg = start_cluster()
    try:
        yield pg
    finally:
        stop_cluster(pg)


def start_cluster(host: str = "127.0.0.1", netns: str | None = None) -> PgServer:
    """initdb and start a cluster listening on host (inside netns when given), with a database
    `rgrid`. Skips (fails under RGRID_REQUIRE_ALL=1) when PostgreSQL is not installed."""
    bindir = _pg_bindir()
    if bindir is None:
        message = (
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb), so the PostgreSQL half of "
            "the database tests cannot run. Install it with `apt-get install postgresql` and run them again."
        )
        if os.environ.get("RGRID_REQUIRE_ALL") == "1":
            pytest.fail(message + " (RGRID_REQUIRE_ALL=1 forbids skipping.)")
        pytest.skip(message)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("Running as root but there is no 'postgres' system user to run initdb as; "
                        "`apt-get install postgresql` creates it.")

    base = Path(tempfile.mkdtemp(prefix="rgrid-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data = base / "data"
    log = base / "tools.log"
    server_log = base / "server.log"
    for f in (log, server_log):
        f.touch()
        if os.geteuid() == 0:
            os.chown(f, pw.pw_uid, pw.pw_gid)

    _run_as_owner(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        cwd=base, log=log,
    )
    if host != "127.0.0.1":  # initdb trusts loopback only; the namespace's peers are the suite's own hosts
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {host.rsplit('.', 2)[0]}.0.0/16 trust\n")
    started = None
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken between probing and binding: try another
        port = free_port()
        opts = (
            f"-p {port} -c listen_addresses={host} -c unix_socket_directories={base} "
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections=200 -c timezone={PG_CLUSTER_TIMEZONE}"
        )
        try:
            _run_as_owner(
                [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(server_log),
                 "-o", opts],
                cwd=base, log=log, netns=netns,
            )
            started = PgServer(port=port, base=base, bindir=bindir, opts=opts, host=host, netns=netns)
            break
        except RuntimeError as e:
            last_error = e
    if started is None:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{server_log.read_text(errors='replace')[-4000:]}")
    try:
        with started.admin() as conn:
            conn.execute("CREATE DATABASE rgrid")
    except BaseException:
        stop_cluster(started)
        raise
    return started


def stop_cluster(pg: PgServer) -> None:
    try:
        _run_as_owner([str(pg.bindir / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(pg.data)], cwd=pg.base,
                      log=pg.base / "tools.log")
    finally:
        shutil.rmtree(pg.base, ignore_errors=True)

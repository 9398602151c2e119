"""Fixtures for the database tests: a real SQLite file and a real, throwaway PostgreSQL.

Every test that takes `db_url` (or `engine`) runs twice, once per database. The PostgreSQL cluster is
started once per session by the tests themselves (initdb + pg_ctl, 127.0.0.1 only, a free port) and
each test gets its own freshly created database, migrated from empty by Alembic.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert

from rgrid_service.db.models import Execution, Tenant
from rgrid_service.db.session import make_engine, upgrade_schema

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

    def url(self, database: str = "rgrid") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self):
        """An autocommit psycopg connection to the `postgres` maintenance database."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )


def _run_as_owner(args: list[str], cwd: Path, log: Path, timeout: float = 120) -> None:
    """Run a PostgreSQL tool, as the `postgres` system user when we are root (initdb refuses root)."""
    kwargs: dict = {}
    if os.geteuid() == 0:
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


@pytest.fixture(scope="session")
def pg_server():
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
    started = None
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken between probing and binding: try another
        port = free_port()
        opts = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections=200 -c timezone={PG_CLUSTER_TIMEZONE}"
        )
        try:
            _run_as_owner(
                [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(server_log),
                 "-o", opts],
                cwd=base, log=log,
            )
            started = PgServer(port=port, base=base, bindir=bindir)
            break
        except RuntimeError as e:
            last_error = e
    if started is None:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{server_log.read_text(errors='replace')[-4000:]}")

    try:
        with started.admin() as conn:
            conn.execute("CREATE DATABASE rgrid")
        yield started
    finally:
        try:
            _run_as_owner([str(bindir / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(data)], cwd=base, log=log)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database per test, migrated to head from empty; yields its URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rgrid.db'}"
        upgrade_schema(url)
        yield url
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = "t_" + uuid.uuid4().hex[:16]
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = server.url(name)
    try:
        upgrade_schema(url)
        yield url
    finally:
        with server.admin() as conn:
            # FORCE: engines cached by create_app (engine_for) may still hold pooled connections.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def make_execution(engine):
    """Insert a tenant (once) and an execution row directly; returns the execution id."""
    tenants: set[str] = set()

    def make(status: str = "queued", tenant_id: str = "tenant-a", **overrides) -> str:
        execution_id = "ex-" + uuid.uuid4().hex[:12]
        with engine.begin() as conn:
            if tenant_id not in tenants:
                conn.execute(insert(Tenant).values(id=tenant_id, name=tenant_id))
                tenants.add(tenant_id)
            values = dict(
                id=execution_id, tenant_id=tenant_id, status=status, script="s.py", args=[], env={},
                runtime="python:3.11", timeout_seconds=60, inputs=[],
            )
            values.update(overrides)
            conn.execute(insert(Execution).values(**values))
        return execution_id

    return make

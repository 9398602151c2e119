"""Engine creation and schema migration, shared by the API, orchestrator and runner."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from .poolwait import TimedQueuePool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Several processes (API, orchestrator, runners) share one file: WAL plus a long busy
        # timeout turns lock contention into waiting instead of "database is locked".
        # A pool as large as the API's thread pool (anyio's 40 threads): with SQLAlchemy's default
        # (5 + 10 overflow) a loaded API opened and closed a connection (and ran its pragmas) for
        # most requests. SQLite connections are cheap to keep.
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               poolclass=TimedQueuePool, pool_size=40, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # Let SQLAlchemy's BEGIN really start a transaction (the driver's own handling is off).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            # Writes (write_tx) take the write lock up front, so read-then-write transactions
            # cannot fail on a stale snapshot; reads stay deferred, so WAL lets them run beside a
            # writer instead of queueing behind it.
            # Straight to the driver: through SQLAlchemy's statement machinery the BEGIN cost as
            # much as the read after it.
            conn.connection.dbapi_connection.execute(
                "BEGIN IMMEDIATE" if conn.get_execution_options().get("rgrid_write") else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # Naive timestamps are UTC everywhere: pin the session time zone so now() agrees.
    return create_engine(
        url,
        pool_pre_ping=True,
        poolclass=TimedQueuePool,  # the wait for a connection is a metric (poolwait.py)
        pool_size=10,
        max_overflow=20,
        connect_args={"options": "-c timezone=UTC"},
    )


def write_tx(engine: Engine):
    """`with write_tx(engine) as conn:` a transaction that will write (IMMEDIATE on SQLite)."""
    writer = engine.__dict__.get("_rgrid_writer")
    if writer is None:
        # Made once per engine: building the option-carrying engine on every write was a
        # measurable share of a short run's time.
        writer = engine.__dict__["_rgrid_writer"] = engine.execution_options(rgrid_write=True)
    return writer.begin()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def upgrade_schema(url: str) -> None:
    """Bring the schema to the newest Alembic revision (builds it from empty)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")

"""SQLAlchemy models: the database is the only authority on execution state.

Timestamps are stored as naive UTC (the database clock, `now()`, writes most of them).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement


class Base(DeclarativeBase):
    pass


# Statuses and worker states are rgrid_core.states (ExecutionStatus, WorkerState).


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # `tenant`: the tenant's own runs. `operator`: also the fleet, the workers and the metrics.
    scope: Mapped[str] = mapped_column(String(16), server_default="tenant")
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class next_execution_seq(FunctionElement):
    """The next `executions.seq`, in SQL, rendered into every INSERT of an execution.

    PostgreSQL: the sequence `executions_seq` (migration 0005). SQLite: one past the highest,
    which is safe because SQLite has one writer at a time (a statement whose snapshot is stale
    cannot write) and the unique index backs it. Keep one row per INSERT statement on SQLite: in a
    multi-row VALUES the subquery would see none of the statement's own rows."""

    type = BigInteger()
    inherit_cache = True
    name = "next_execution_seq"


@compiles(next_execution_seq)
def _next_seq(element, compiler, **kw):
    return "(SELECT coalesce(max(seq), 0) + 1 FROM executions)"


@compiles(next_execution_seq, "postgresql")
def _next_seq_postgresql(element, compiler, **kw):
    return "nextval('executions_seq')"


class Execution(Base):
    __tablename__ = "executions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    script: Mapped[str] = mapped_column(String(255))
    args: Mapped[list] = mapped_column(JSON, default=list)
    # Plain env values of rows written before migration 0008 only; new rows use env_sealed.
    env: Mapped[dict] = mapped_column(JSON, default=dict)
    # The env values, encrypted with a key only the control plane holds (rgrid_service.secrets);
    # never returned by the API, never logged, removed when the run ends.
    env_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    env_keys: Mapped[list | None] = mapped_column(JSON, nullable=True)  # their names (not secret)
    runtime: Mapped[str] = mapped_column(String(64))
    # The requirements.txt the run asked for (migration 0012): the worker installs its packages
    # into a layer on the runtime's image (rgrid_runner.layers). None: the image as it is.
    requirements: Mapped[str | None] = mapped_column(Text, nullable=True)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[list] = mapped_column(JSON, default=list)
    batch_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # At most this many executions of the batch run at once (None: no limit).
    batch_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Fencing token: incremented by every claim.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    # Creation order: unique and increasing, one per row even when a bulk create gives many rows
    # the same created_at. Listings run newest first on it (and a keyset cursor can).
    seq: Mapped[int] = mapped_column(BigInteger, default=next_execution_seq())
    queued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The worker the orchestrator placed the pending dispatch on.
    dispatched_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # When the run began waiting for a worker the fleet was asked for (None: it never waited).
    provisioning_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Its share of its workers' paid hours, over every attempt (see policies/costs).
    cost_eur: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When retention deleted its inputs and outputs from the store (None: still kept).
    files_expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (
        Index("ix_executions_seq", "seq", unique=True),
        Index("ix_executions_finished_at", "finished_at"),
        # One per shape of the API's reads (migration 0009, docs/architecture.md, Read paths):
        # equality on the leading columns, newest first on seq, a keyset cursor a range of it.
        Index("ix_executions_tenant_seq", "tenant_id", "seq"),
        Index("ix_executions_tenant_status_seq", "tenant_id", "status", "seq"),
        Index("ix_executions_tenant_batch_seq", "tenant_id", "batch_id", "seq"),
        Index("ix_executions_tenant_batch_status_seq", "tenant_id", "batch_id", "status", "seq"),
        Index("ix_executions_status_worker", "status", "worker_id"),
        # The orchestrator's periodic reads (migration 0010): runs dispatched within the placement
        # window, per worker; ended runs whose files are still kept, oldest first (retention).
        Index("ix_executions_dispatched_at_to", "dispatched_at", "dispatched_to"),
        Index("ix_executions_files_expired_finished", "files_expired_at", "finished_at"),
    )


class ExecutionAttempt(Base):
    """One row per claim: the attempt history a user sees in `rgrid status`."""

    __tablename__ = "execution_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())  # claimed: staging
    running_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # the script started
    uploading_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # outputs going up
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    cost_eur: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Executions running on the worker right after this claim (this one included).
    running_on_worker: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (UniqueConstraint("execution_id", "attempt"),)


class ExecutionOutput(Base):
    """Files committed by the winning attempt, written in the same transaction as its final status."""

    __tablename__ = "execution_outputs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(1200))
    __table_args__ = (UniqueConstraint("execution_id", "path"),)


class LogChunk(Base):
    """Raw stdout/stderr bytes (not necessarily UTF-8), in arrival order by id."""

    __tablename__ = "log_chunks"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(8))  # stdout | stderr | system
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    # A page of one run's log after a cursor, in order, is a range of this index (migration 0009).
    __table_args__ = (Index("ix_log_chunks_execution_id_id", "execution_id", "id"),)


class Blob(Base):
    """An input a tenant has uploaded and the API has verified (size and MD5 against the store),
    kept by content: a later execution sending the same file reuses it instead of uploading it.
    Per tenant, so nobody can learn from a skipped upload that another tenant holds a file."""

    __tablename__ = "blobs"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    object_key: Mapped[str] = mapped_column(String(1200))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # retention keeps used blobs


class TenantQuota(Base):
    """A tenant's limits where they differ from the settings' defaults (None: the default)."""

    __tablename__ = "tenant_quotas"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    max_queued_runs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_running_runs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    server_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    location: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # a rgrid_core.states.WorkerState
    slots: Mapped[int] = mapped_column(Integer, default=2)
    # When the record was written: the server is created after it, so billing hours counted
    # from here end no later than the provider's own.
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    server_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the provider's id
    active_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # first heartbeat
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dead_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dead_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The Ray node the orchestrator last saw carrying this worker's label (its health sweep records it).
    ray_node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when an operator retired the worker by hand: it drains and is deleted, never taken back.
    retire_requested_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # When its worker token stopped being honoured (retired, declared dead, deleted).
    token_revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # What it said at its last registration: no Docker (None), or the runtime images it holds,
    # [{"runtime", "tag", "size_bytes"}] (`rgrid runtimes`).
    runtime_images: Mapped[list | None] = mapped_column(JSON, nullable=True)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"), primary_key=True)
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    running: Mapped[list] = mapped_column(JSON, default=list)


class FleetEvent(Base):
    """One thing the fleet did or decided, with its reason: provisioning decisions, engine updates
    (their duration and result), errors from the provider."""

    __tablename__ = "fleet_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))  # decision | update | error
    trigger: Mapped[str | None] = mapped_column(String(32), nullable=True)  # provisioning | replacement | retirement | manual
    message: Mapped[str] = mapped_column(Text)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    # An update's changes: {"create": [worker ids], "delete": [...], "replace": [...]}.
    diff: Mapped[dict | None] = mapped_column(JSON, nullable=True)

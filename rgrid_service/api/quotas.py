"""Reads behind the per-tenant quotas (the decision is policies.quotas): a tenant's limits and
what it uses now, and the check a create makes before it inserts anything."""
from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from rgrid_core.states import ExecutionStatus

from ..db.models import Blob, Execution, ExecutionOutput, Tenant, TenantQuota
from ..policies.quotas import Limits, Usage, effective, refusal
from ..settings import ServiceSettings
from .errors import OverQuota


def limits(conn: Connection, settings: ServiceSettings, tenant_id: str) -> Limits:
    q = conn.execute(select(TenantQuota.max_queued_runs, TenantQuota.max_running_runs, TenantQuota.max_stored_bytes)
                     .where(TenantQuota.tenant_id == tenant_id)).first()
    return Limits(
        queued_runs=effective(settings.quota_max_queued_runs, q and q.max_queued_runs),
        running_runs=effective(settings.quota_max_running_runs, q and q.max_running_runs),
        stored_bytes=effective(settings.quota_max_stored_bytes, q and q.max_stored_bytes),
    )


def stored_bytes(conn: Connection, tenant_id: str) -> int:
    """The tenant's kept inputs, the outputs of its runs whose files have not expired, and the
    uploads of its runs that were never queued."""
    blobs = conn.execute(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.tenant_id == tenant_id)).scalar_one()
    outputs = conn.execute(
        select(func.coalesce(func.sum(ExecutionOutput.size), 0))
        .join(Execution, Execution.id == ExecutionOutput.execution_id)
        .where(Execution.tenant_id == tenant_id, Execution.files_expired_at.is_(None))
    ).scalar_one()
    # Uploads of runs never queued (still uploading, or canceled before their submit) sit on their
    # staging keys until retention deletes them: they count too, so creating and abandoning runs
    # cannot fill the store past the quota.
    staged = sum(spec.get("size", 0) for inputs in conn.execute(
        select(Execution.inputs).where(Execution.tenant_id == tenant_id,
                                       Execution.status.in_((ExecutionStatus.UPLOADING, ExecutionStatus.CANCELED)),
                                       Execution.queued_at.is_(None), Execution.files_expired_at.is_(None))).scalars()
                 for spec in inputs or [] if spec.get("upload"))
    return int(blobs) + int(outputs) + staged


def usage(conn: Connection, tenant_id: str, with_bytes: bool = True) -> Usage:
    queued = conn.execute(
        select(func.count()).where(Execution.tenant_id == tenant_id,
                                   Execution.status.in_((ExecutionStatus.UPLOADING, ExecutionStatus.QUEUED)))
    ).scalar_one()
    return Usage(queued_runs=int(queued), stored_bytes=stored_bytes(conn, tenant_id) if with_bytes else 0)


def lock_tenant(conn: Connection, tenant_id: str) -> None:
    """Creates of one tenant check and insert one after another: on PostgreSQL (READ COMMITTED) two
    at once would each miss the other's runs and both pass a limit, so the tenant's row is locked
    until the transaction ends. SQLite's write transactions (BEGIN IMMEDIATE) are serial already."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def _own_quota(column):
    return select(column).where(TenantQuota.tenant_id == bindparam("tenant_id")).scalar_subquery()


# A create's check in one statement, built once: the tenant's own limits (NULL: none set) and its
# runs uploading or queued (limits() and usage() read the same, in two).
LIMITS_AND_QUEUED = select(
    _own_quota(TenantQuota.max_queued_runs), _own_quota(TenantQuota.max_running_runs),
    _own_quota(TenantQuota.max_stored_bytes),
    select(func.count()).where(Execution.tenant_id == bindparam("tenant_id"),
                               Execution.status.in_((ExecutionStatus.UPLOADING, ExecutionStatus.QUEUED)))
    .scalar_subquery(),
)


def check(conn: Connection, settings: ServiceSettings, tenant_id: str, new_runs: int, new_bytes: int) -> None:
    """Raise OverQuota (429, a sentence) when the create would go over a limit. Takes the tenant's
    lock first (lock_tenant), held until the caller's transaction ends."""
    lock_tenant(conn, tenant_id)
    max_queued, max_running, max_stored, queued = conn.execute(LIMITS_AND_QUEUED, {"tenant_id": tenant_id}).one()
    lim = Limits(queued_runs=effective(settings.quota_max_queued_runs, max_queued),
                 running_runs=effective(settings.quota_max_running_runs, max_running),
                 stored_bytes=effective(settings.quota_max_stored_bytes, max_stored))
    with_bytes = lim.stored_bytes is not None and new_bytes > 0
    use = Usage(queued_runs=int(queued), stored_bytes=stored_bytes(conn, tenant_id) if with_bytes else 0)
    problem = refusal(lim, use, new_runs, new_bytes)
    if problem:
        raise OverQuota(problem)

"""Operator commands: `python -m rgrid_service.admin migrate | create-key TENANT [--operator] |
register-key-hash TENANT SHA256 | ensure-bucket | set-quota TENANT`."""
from __future__ import annotations

import re

import typer
from sqlalchemy import delete, insert, select, update

from .auth import OPERATOR_SCOPE, SCOPES, TENANT_SCOPE, create_key
from .db.models import ApiKey, Tenant, TenantQuota
from .db.session import engine_for, upgrade_schema, write_tx
from .settings import get_settings

cli = typer.Typer(add_completion=False, no_args_is_help=True)


@cli.command()
def migrate() -> None:
    """Build or upgrade the schema to the newest migration."""
    upgrade_schema(get_settings().database_url)
    typer.echo("Schema is up to date.")


@cli.command("create-key")
def create_key_cmd(
    tenant: str,
    operator: bool = typer.Option(False, "--operator",
                                  help="Operator scope: also the fleet (workers, previews, history) and acting on it."),
) -> None:
    """Create an API key for TENANT (created if new); prints the key once."""
    typer.echo(create_key(engine_for(get_settings().database_url), tenant,
                          scope=OPERATOR_SCOPE if operator else TENANT_SCOPE))


@cli.command("register-key-hash")
def register_key_hash(tenant: str, sha256: str, scope: str = typer.Option("tenant", help="tenant or operator")) -> None:
    """Record a key made elsewhere by its sha256 (the control plane's first key: the deployer holds
    the key, the server only its hash). Safe to repeat."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise typer.BadParameter("SHA256 must be 64 lowercase hex digits (the sha256 of the key).")
    if scope not in SCOPES:
        raise typer.BadParameter("--scope must be tenant or operator.")
    with write_tx(engine_for(get_settings().database_url)) as conn:
        if conn.execute(select(ApiKey.id).where(ApiKey.key_hash == sha256)).first():
            typer.echo("That key is already registered.")
            return
        if not conn.execute(select(Tenant.id).where(Tenant.id == tenant)).first():
            conn.execute(insert(Tenant).values(id=tenant, name=tenant))
        conn.execute(insert(ApiKey).values(tenant_id=tenant, key_hash=sha256, scope=scope))
    typer.echo(f"Registered {'an' if scope == 'operator' else 'a'} {scope} key for tenant {tenant}.")


@cli.command("set-quota")
def set_quota(
    tenant: str,
    queued: int | None = typer.Option(None, "--queued", min=0, help="Runs uploading or queued at once (0: no limit)."),
    running: int | None = typer.Option(None, "--running", min=0, help="Runs running at once (0: no limit)."),
    stored_gb: float | None = typer.Option(None, "--stored-gb", min=0,
                                           help="GiB of kept inputs and unexpired outputs (0: no limit)."),
    default: bool = typer.Option(False, "--default", help="Drop TENANT's own limits: the settings' defaults apply."),
) -> None:
    """Set TENANT's own limits where they differ from the defaults (RGRID_QUOTA_*); a limit not
    given keeps its current value."""
    values = {k: v for k, v in dict(max_queued_runs=queued, max_running_runs=running,
                                    max_stored_bytes=None if stored_gb is None else int(stored_gb * 1024 ** 3)).items()
              if v is not None}
    with write_tx(engine_for(get_settings().database_url)) as conn:
        if not conn.execute(select(Tenant.id).where(Tenant.id == tenant)).first():
            raise typer.BadParameter(f"No tenant {tenant!r}; create its key first (create-key).")
        row = conn.execute(select(TenantQuota.tenant_id).where(TenantQuota.tenant_id == tenant)).first()
        if default:
            conn.execute(delete(TenantQuota).where(TenantQuota.tenant_id == tenant))
        elif row is None:
            conn.execute(insert(TenantQuota).values(tenant_id=tenant, **values))
        elif values:
            conn.execute(update(TenantQuota).where(TenantQuota.tenant_id == tenant).values(**values))
        q = conn.execute(select(TenantQuota.max_queued_runs, TenantQuota.max_running_runs,
                                TenantQuota.max_stored_bytes).where(TenantQuota.tenant_id == tenant)).first()
    shown = "defaults" if q is None else ", ".join(
        f"{name} {'default' if v is None else v}" for name, v in zip(("queued", "running", "stored bytes"), q))
    typer.echo(f"Quota of {tenant}: {shown} (0: no limit).")


@cli.command("ensure-bucket")
def ensure_bucket() -> None:
    """Create the object store's bucket if it does not exist."""
    from .storage import ObjectStore

    settings = get_settings()
    ObjectStore(settings).ensure_bucket()
    typer.echo(f"Bucket {settings.s3_bucket} is ready.")


if __name__ == "__main__":
    cli()

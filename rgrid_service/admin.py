"""Operator commands: `python -m rgrid_service.admin migrate | create-key TENANT`."""
from __future__ import annotations

import typer

from .auth import create_key
from .db.session import engine_for, upgrade_schema
from .settings import get_settings

cli = typer.Typer(add_completion=False, no_args_is_help=True)


@cli.command()
def migrate() -> None:
    """Build or upgrade the schema to the newest migration."""
    upgrade_schema(get_settings().database_url)
    typer.echo("Schema is up to date.")


@cli.command("create-key")
def create_key_cmd(tenant: str) -> None:
    """Create an API key for TENANT (created if new); prints the key once."""
    typer.echo(create_key(engine_for(get_settings().database_url), tenant))


if __name__ == "__main__":
    cli()

"""``flask asyncstate ...`` commands (filled in with the CLI issue)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

asyncstate_cli = AppGroup("asyncstate", help="Inspect and manage flask-asyncstate jobs.")


@asyncstate_cli.command("list")
def list_jobs() -> None:
    """List live jobs across instances."""
    click.echo("not yet")

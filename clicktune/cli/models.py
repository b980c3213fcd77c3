"""`clicktune models`: registered model versions, promotion and rollback."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

app = typer.Typer(help="List, promote and roll back model versions.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List registered model versions and their aliases."""
    planned("models list", 5)


@app.command()
def promote(version: str) -> None:
    """Make VERSION the production model (alias and serving slots follow)."""
    planned("models promote", 7)


@app.command()
def rollback() -> None:
    """Return to the previous production model."""
    planned("models rollback", 7)

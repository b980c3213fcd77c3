"""`clicktune ab`: A/B experiments between the live model and a candidate."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

app = typer.Typer(help="Start, watch and stop A/B experiments.", no_args_is_help=True)


@app.command()
def start(
    candidate: str = typer.Option(..., help="candidate model version"),
    traffic: float = typer.Option(0.1, min=0.0, max=1.0, help="fraction of clients"),
) -> None:
    """Route a fraction of clients to the candidate model and its index."""
    planned("ab start", 7)


@app.command()
def status() -> None:
    """Per-arm metrics with confidence intervals."""
    planned("ab status", 7)


@app.command()
def stop() -> None:
    """End the experiment; all traffic returns to production."""
    planned("ab stop", 7)

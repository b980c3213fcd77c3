"""`clicktune train`, `clicktune eval`, `clicktune tuner run`: the learning side."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

tuner_app = typer.Typer(help="The tuner worker (scheduler, fine-tuning tasks).", no_args_is_help=True)


@tuner_app.command("run")
def tuner_run() -> None:
    """Run the scheduler: trigger fine-tuning when enough new sessions have built up."""
    planned("tuner run", 8)


def train() -> None:
    """Build training pairs from the stored sessions and fine-tune the model once."""
    planned("train", 5)


def evaluate() -> None:
    """Evaluate a model on a judged collection (nDCG@10, MRR@10, Recall@10/100)."""
    planned("eval", 5)

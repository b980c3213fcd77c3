"""`clicktune train`, `clicktune eval`, `clicktune tuner run`: the learning side."""

from __future__ import annotations

from typing import Annotated

import typer

from clicktune.cli.common import fail, planned, print_json, settings_of
from clicktune.clients import opensearch_client

tuner_app = typer.Typer(
    help="The tuner worker (scheduler, fine-tuning tasks).", no_args_is_help=True
)


@tuner_app.command("run")
def tuner_run() -> None:
    """Run the scheduler: trigger fine-tuning when enough new sessions have built up."""
    planned("tuner run", 8)


def train(
    ctx: typer.Context,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="stop after N optimizer steps")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="point the production alias at the new version")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Fine-tune the live model once on the stored sessions and register the new version."""
    from serving.errors import ServingError
    from serving.registry import LocalRegistry
    from serving.vector_index import DocumentIndex
    from tuner.errors import TunerError
    from tuner.iteration import run_training_iteration

    settings = settings_of(ctx)
    tuner_settings = settings.tuner
    if max_steps is not None:
        train_settings = tuner_settings.train.model_copy(update={"max_steps": max_steps})
        tuner_settings = tuner_settings.model_copy(update={"train": train_settings})
    client = opensearch_client(settings.opensearch)
    registry = LocalRegistry(settings.home / "models")
    try:
        result = run_training_iteration(
            client,
            ingest_settings=settings.ingest,
            tuner_settings=tuner_settings,
            registry=registry,
            documents=DocumentIndex(client, settings.serving.index),
            text_fields=settings.serving.index.text_fields,
            progress=not as_json,
        )
        if promote:
            registry.set_alias("production", result.version.version)
    except (TunerError, ServingError) as exc:
        fail(str(exc))
    if as_json:
        print_json(
            {
                "status": "done",
                "version": result.version.version,
                "pairs": result.pairs,
                "sessions": result.sessions,
                "steps": result.train.steps,
                "seconds": round(result.train.seconds + result.export.seconds, 2),
            }
        )
        return
    typer.echo(
        f"trained {result.version.version} from {result.start}: {result.sessions} sessions, "
        f"{result.pairs} pairs, {result.train.steps} steps in {result.train.seconds:.1f} s "
        f"({result.train.pairs_per_s:.1f} pairs/s on {result.train.device}), loss "
        f"{result.train.first_loss:.4f} -> {result.train.final_loss:.4f}; ONNX parity "
        f"{result.export.parity_min_cosine:.6f}"
    )
    typer.echo(
        f"production is now {result.version.version}"
        if promote
        else f"not promoted: `clicktune models promote {result.version.version}` to serve it"
    )


def evaluate() -> None:
    """Evaluate a model on a judged collection (nDCG@10, MRR@10, Recall@10/100)."""
    planned("eval", 5)

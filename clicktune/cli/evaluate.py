"""`clicktune eval`: any registered model on a judged collection, through OpenSearch k-NN."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clicktune.cli.common import fail, print_json, require_training_stack, settings_of
from clicktune.clients import opensearch_client


def evaluate(
    ctx: typer.Context,
    dataset: Annotated[
        Path,
        typer.Option(
            help="judged collection directory (corpus.jsonl, queries.jsonl, qrels.tsv, split.json)"
        ),
    ],
    model: Annotated[
        str, typer.Option(help="registered version or alias, e.g. base, v3, production")
    ] = "production",
    split: Annotated[str, typer.Option(help="which queries of split.json to score")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Evaluate a model on a judged collection: nDCG@10, MRR@10, Recall@10 and Recall@100."""
    from clicktune.clients import model_registry
    from serving.encoders.encoder import OnnxTextEncoder
    from serving.errors import ServingError
    from tuner.errors import TunerError
    from tuner.judged import DatasetError, load_collection
    from tuner.offline_eval import evaluate_collection, evaluation_index, model_fingerprint

    settings = settings_of(ctx)
    try:
        collection = load_collection(dataset)
        version = _registered(model_registry(settings), model, settings)
        encoder = OnnxTextEncoder.from_dir(version.path, settings.serving.encoder)
        doc_index = evaluation_index(
            opensearch_client(settings.opensearch),
            settings.serving.index,
            collection,
            model_fingerprint(version.path),
        )
        report = evaluate_collection(collection, encoder, doc_index, split, progress=not as_json)
    except (DatasetError, ServingError, TunerError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(report.as_dict())
        return
    typer.echo(f"{collection.name} / {split}: {report.queries} queries, model {version.version}")
    for name, value in report.metrics.items():
        typer.echo(f"  {name:<11}{value:.4f}")


def _registered(registry, model: str, settings):  # type: ignore[no-untyped-def]
    """The registered version `model`; the default base model is imported on first use (a fresh
    home has none), saying so, instead of failing until `clicktune models import` ran."""
    from serving.errors import RegistryError

    try:
        return registry.get(model)
    except RegistryError:
        if model != BASE_VERSION:
            raise
    base = settings.tuner.train.base_model
    typer.echo(
        f"no model {model!r} registered yet: importing the default base model {base} first "
        "(what `clicktune models import` does; once)"
    )
    require_training_stack(f"importing the base model {base}")
    from tuner.publish import import_model

    max_length = settings.tuner.train.max_length
    return import_model(registry, base, BASE_VERSION, "production", max_length).version


BASE_VERSION = "base"

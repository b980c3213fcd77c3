"""`clicktune train`, `clicktune eval`: the learning side (the worker is `cli/tuner.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from clicktune.cli.common import fail, print_json, settings_of
from clicktune.clients import opensearch_client


def train(
    ctx: typer.Context,
    now: Annotated[
        bool, typer.Option("--now", help="release every session up to now (no grace period)")
    ] = False,
    batch_id: Annotated[
        str | None, typer.Option("--batch", help="train again on an already released batch")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="stop after N optimizer steps")
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            help="train data-parallel in N processes here under torchrun, one per GPU "
            "(tuner.train.distributed.nproc_per_node)",
        ),
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="point the production alias at the new version")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Release a batch of sessions and run one training iteration in the foreground.

    The candidate is registered (alias `candidate`) only if it passes the gate; otherwise the
    iteration ends `rejected` with the numbers (exit code 0 either way).
    """
    from serving.errors import ServingError
    from tuner.ann_mining import mining_index
    from tuner.errors import TunerError

    settings = settings_of(ctx)
    tuner_settings = settings.tuner
    if max_steps is not None:
        tuner_settings = _with_max_steps(tuner_settings, max_steps)
    if nproc is not None:
        tuner_settings = _with_processes(tuner_settings, nproc)
    notify = (lambda _: None) if as_json else (lambda m: typer.echo(m, err=True))
    try:
        context = _iteration_context(settings, tuner_settings, notify)
        mining_index(context.neighbours, tuner_settings.train)  # fails before a batch is released
        released = _batch(context, tuner_settings, batch_id, now)
        notify(f"released {released.batch.batch_id}: {released.batch.sessions} sessions")
        result = _run(released, context, tuner_settings, notify, as_json)
        if promote and result.version is not None:
            context.registry.set_alias("production", result.version.version)
            context.tracker.set_alias("production", result.version.version)
    except (TunerError, ServingError) as exc:
        fail(str(exc))
    if as_json:
        print_json(_summary(result))
        return
    _echo_result(result, promote)


def _with_max_steps(tuner_settings, max_steps: int):  # type: ignore[no-untyped-def]
    """Settings whose every hyperparameter set stops after `max_steps`."""
    train_settings = tuner_settings.train.model_copy(update={"max_steps": max_steps})
    search = [o.model_copy(update={"max_steps": max_steps}) for o in tuner_settings.search]
    return tuner_settings.model_copy(update={"train": train_settings, "search": search})


def _with_processes(tuner_settings, nproc: int):  # type: ignore[no-untyped-def]
    """Settings whose fine-tunes run in `nproc` processes on this machine; refused (exit 1)
    when the training settings cannot take that many."""
    from pydantic import ValidationError

    from tuner.config import TrainSettings

    train = tuner_settings.train.model_dump()
    train["distributed"] = {**train["distributed"], "nproc_per_node": nproc}
    try:
        validated = TrainSettings.model_validate(train)
    except ValidationError as exc:
        fail(f"--nproc {nproc}: " + "; ".join(e["msg"] for e in exc.errors()))
    return tuner_settings.model_copy(update={"train": validated})


def _iteration_context(settings, tuner_settings, notify):  # type: ignore[no-untyped-def]
    from clicktune.cli.state import batch_store
    from clicktune.clients import model_registry
    from serving.index.vector_index import DocumentIndex
    from tuner.iteration import IterationContext
    from tuner.judged import load_collection
    from tuner.negatives import OpenSearchNeighbours
    from tuner.sessions import OpenSearchSessions
    from tuner.tracking import tracker_from_settings

    client = opensearch_client(settings.opensearch)
    gate = tuner_settings.gate
    general = load_collection(gate.general_dataset) if gate.general_dataset else None
    if general is None:
        notify("no general query set configured (tuner.gate.general_dataset): check skipped")
    # the live alias: the documents' texts, and the neighbours negatives ann_mined searches
    documents = DocumentIndex(client, settings.serving.index)
    return IterationContext(
        source=OpenSearchSessions(client, settings.ingest),
        store=batch_store(settings, client),
        registry=model_registry(settings),
        documents=documents,
        text_fields=settings.serving.index.text_fields,
        image_field=settings.serving.index.image_field,
        tracker=tracker_from_settings(tuner_settings, settings.home),
        general=general,
        neighbours=OpenSearchNeighbours(documents),
    )


def _batch(context, tuner_settings, batch_id: str | None, now: bool):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from tuner.batches import release_batch, reload_batch

    if batch_id is not None:
        return reload_batch(context.store, context.source, batch_id)
    grace = timedelta(seconds=0 if now else tuner_settings.batches.grace_s)
    return release_batch(context.store, context.source, datetime.now(UTC), grace)


def _run(released, context, tuner_settings, notify, as_json: bool):  # type: ignore[no-untyped-def]
    from tuner.iteration import run_training_iteration

    # No online test follows a manual run: a candidate must show its gain offline.
    return run_training_iteration(
        released, context, tuner_settings, notify=notify, progress=not as_json, online=False
    )


def _summary(result) -> dict:  # type: ignore[no-untyped-def]
    decision = result.decision
    summary = {
        "status": result.status,
        "version": result.version.version if result.version is not None else None,
        "batch_id": result.batch_id,
        "metrics": {"candidate": decision.candidate, "live": decision.live},
        "reason": decision.reason,
        "sessions": result.sessions,
        "replayed": result.replayed,
        "validation_sessions": result.validation_sessions,
        "pairs": result.pairs,
        "steps": result.train.steps,
        "propensity": list(result.propensity),
        "trials": [
            {"name": t.name, "run_id": t.run_id, "validation": t.scores.validation}
            for t in result.trials
        ],
    }
    if decision.general_candidate is not None:
        summary["general"] = {
            "candidate": decision.general_candidate,
            "live": decision.general_live,
        }
    return summary


def _echo_result(result, promote: bool) -> None:  # type: ignore[no-untyped-def]
    report = result.train
    typer.echo(
        f"{result.status}: {result.batch_id}, {result.sessions} sessions, {result.pairs} pairs, "
        f"{report.steps} steps in {report.seconds:.1f} s ({report.pairs_per_s:.1f} pairs/s on "
        f"{report.device}), loss {report.first_loss:.4f} -> {report.final_loss:.4f}"
    )
    typer.echo(f"gate: {result.decision.reason}")
    if result.version is None:
        typer.echo("nothing registered")
        return
    typer.echo(
        f"production is now {result.version.version}"
        if promote
        else f"registered {result.version.version} as candidate: "
        f"`clicktune models promote {result.version.version}` to serve it"
    )

"""`clicktune ab`: A/B experiments between the live model and a candidate."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clicktune.cli.common import fail, print_json, settings_of

app = typer.Typer(help="Start, watch and stop A/B experiments.", no_args_is_help=True)


@app.command()
def start(
    ctx: typer.Context,
    candidate: Annotated[str, typer.Option(help="candidate model version")],
    traffic: Annotated[float, typer.Option(min=0.0, max=1.0, help="fraction of clients")] = 0.1,
    mode: Annotated[str, typer.Option(help="split (arms) or interleave (team draft)")] = "split",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Route a fraction of clients to the candidate model and its index (reindexed if none; a
    query model searches the live index, which its document model must have built)."""
    from serving.errors import ServingError

    settings = settings_of(ctx)
    try:
        experiment = start_experiment(settings, candidate, traffic, mode, progress=not as_json)
    except ServingError as exc:
        fail(str(exc))
    if as_json:
        print_json(experiment.as_dict())
        return
    c, b = experiment.control, experiment.candidate
    typer.echo(
        f"experiment {experiment.id} ({experiment.mode}): {experiment.traffic:.0%} of clients "
        f"-> {b.model_version} on {b.index_alias}; the rest -> {c.model_version} on "
        f"{c.index_alias}"
    )


def start_experiment(settings: Any, candidate: str, traffic: float, mode: str, progress: bool):  # type: ignore[no-untyped-def]
    """Make sure the candidate has an index behind `docs_candidate` (a query model: the live
    index its document model built, no reindex), then record the experiment."""
    from clicktune.cli.index import _doc_index
    from clicktune.cli.state import experiment_store
    from clicktune.clients import model_registry
    from serving.errors import ExperimentError
    from serving.rollout.ab import CANDIDATE, CONTROL, Arm, new_experiment
    from serving.rollout.rollout import paired_index

    store = experiment_store(settings)
    if store.load() is not None:
        raise ExperimentError("an experiment is already running; `clicktune ab stop` it first")
    registry = model_registry(settings)
    control = registry.get(settings.serving.model_version).version
    model = registry.get(candidate)
    chosen = model.version
    if chosen == control:
        raise ExperimentError(f"candidate {chosen!r} is already the production model")
    doc_index = _doc_index(settings)
    index_settings = settings.serving.index
    if model.document_model is not None:  # two query models can compare over one index
        paired_index(doc_index, model)
        candidate_alias = index_settings.alias
    else:
        _candidate_index(settings, doc_index, chosen, progress)
        candidate_alias = index_settings.candidate_alias
    experiment = new_experiment(
        Arm(CONTROL, control, index_settings.alias),
        Arm(CANDIDATE, chosen, candidate_alias),
        traffic,
        mode,  # type: ignore[arg-type]
    )
    store.save(experiment)
    return experiment


def _candidate_index(settings: Any, doc_index: Any, version: str, progress: bool) -> None:
    """Point `docs_candidate` at a kept index of `version` holding the live count, else
    reindex into a new one."""
    from clicktune.cli.index import run_reindex
    from serving.index.index_versions import alias_holders, latest_index_of, move_aliases

    alias = settings.serving.index.candidate_alias
    live = doc_index.live_index()
    kept = latest_index_of(doc_index, version)
    if kept is not None and live is not None and doc_index.refresh(kept) == doc_index.refresh(live):
        old = alias_holders(doc_index, alias)
        actions = [{"remove": {"index": i, "alias": alias}} for i in old]
        move_aliases(doc_index, [*actions, {"add": {"index": kept, "alias": alias}}])
    else:
        run_reindex(settings, version, progress=progress, alias=alias)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Per-arm metrics with confidence intervals, the sequential test and its decision."""
    from clicktune.cli.index import _doc_index
    from clicktune.cli.state import experiment_store
    from serving.errors import ServingError
    from serving.rollout.ab_stats import decide, metrics_of

    settings = settings_of(ctx)
    try:
        experiment = experiment_store(settings).load()
        if experiment is None:
            fail("no experiment is running; start one with `clicktune ab start`")
        ingest = settings.ingest
        metrics = metrics_of(
            _doc_index(settings).client, experiment, ingest.queries_index, ingest.events_index
        )
    except ServingError as exc:
        fail(str(exc))
    decision = decide(experiment, metrics, settings.serving.ab)
    if as_json:
        print_json(
            {"experiment": experiment.as_dict(), **metrics.as_dict(), "decision": vars(decision)}
        )
        return
    typer.echo(f"experiment {experiment.id} ({experiment.mode}, traffic {experiment.traffic})")
    for name, arm in metrics.as_dict()["arms"].items():
        typer.echo(f"  {name:<10} {_row(arm)}")
    if experiment.mode == "interleave":
        typer.echo(f"  interleave {vars(metrics.interleave)}")
    typer.echo(f"decision: {decision.action} ({decision.reason})")


def _row(arm: dict[str, Any]) -> str:
    def show(metric: dict[str, Any]) -> str:
        low, high = metric["ci95"]
        return f"{metric['value']:.3f} [{low:.3f}, {high:.3f}]"

    return (
        f"queries {arm['queries']:>6}  ctr {show(arm['ctr'])}  mrr {show(arm['mrr'])}  "
        f"cart {show(arm['add_to_cart_rate'])}  purchase {show(arm['purchase_rate'])}"
    )


@app.command()
def stop(ctx: typer.Context) -> None:
    """End the experiment; all traffic returns to production (the candidate index is kept)."""
    from clicktune.cli.index import _doc_index
    from clicktune.cli.state import experiment_store
    from serving.errors import ServingError
    from serving.index.index_versions import alias_holders, move_aliases

    settings = settings_of(ctx)
    try:
        experiment = experiment_store(settings).stop()
        doc_index = _doc_index(settings)
        alias = settings.serving.index.candidate_alias
        held = alias_holders(doc_index, alias)
        if held:
            move_aliases(doc_index, [{"remove": {"index": i, "alias": alias}} for i in held])
    except ServingError as exc:
        fail(str(exc))
    typer.echo(
        f"experiment {experiment.id} stopped; all traffic on {experiment.control.model_version}"
    )

"""`clicktune demo`: the closed loop on a judged collection, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clicktune.cli.common import fail, settings_of
from clicktune.demo.namespace import DemoMethod
from tuner.config import RolloutMode
from tuner.simulator import ClickModel, UserModel

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "products-synth"


def demo(
    ctx: typer.Context,
    dataset: Annotated[
        Path,
        typer.Option(
            help="judged collection directory (corpus.jsonl, queries.jsonl, qrels.tsv, split.json)"
        ),
    ] = SHIPPED,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="learning rounds")] = 3,
    report: Annotated[Path, typer.Option(help="where report.json/.md/.png and logs go")] = Path(
        "reports/demo"
    ),
    users_per_query: Annotated[
        int, typer.Option(min=1, help="shoppers per train query and round")
    ] = 3,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="cap on training steps per round")
    ] = None,
    randomize: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="share of searches that are shuffled, so position bias can be estimated",
        ),
    ] = 0.2,
    explore_depth: Annotated[
        int,
        typer.Option(
            min=2,
            max=100,
            help="a shuffled search shuffles this many top hits and shows 10 of them; above 10 "
            "it explores below the page, where a better model's gains (recall) can be clicked",
        ),
    ] = 20,
    references: Annotated[
        bool,
        typer.Option(
            help="also train the supervised, clicks and no-IPW references and report them"
        ),
    ] = True,
    score_candidates: Annotated[
        bool,
        typer.Option(
            help="also score each round's candidate, rejected ones too, and the live model on "
            "the test queries by exact search (the tuner records them; they never decide): "
            "costs two passes over the corpus a round"
        ),
    ] = False,
    click_model: Annotated[
        ClickModel,
        typer.Option(
            help="how the simulated shoppers scan the hits: position (each rank examined with "
            "(1/(k+1))^eta), cascade (top-down, may stop after a click) or dbn (top-down, stop "
            "when satisfied, else go on with --dbn-continue)"
        ),
    ] = ClickModel.position,
    eta: Annotated[
        float, typer.Option(help="position bias of the examination curve (position, cascade)")
    ] = 1.0,
    noise: Annotated[
        float, typer.Option(help="probability of a click on an examined irrelevant hit")
    ] = 0.05,
    trust_bias: Annotated[
        float,
        typer.Option(
            help="in [0, 1]: raises the irrelevant-click probability to noise + (1 - noise) * "
            "trust_bias / (k + 1) at rank k, so users trust the top ranks (0: off)"
        ),
    ] = 0.0,
    dbn_continue: Annotated[
        float, typer.Option(help="dbn: probability of going on to the next rank unsatisfied")
    ] = 0.9,
    rollout: Annotated[
        RolloutMode,
        typer.Option(
            help="two_stage: a candidate the offline gate calls not worse is tested online, "
            "interleaved with the live model on the shoppers' next searches, unless the offline "
            "evidence of a gain is strong; promote: the gate alone decides"
        ),
    ] = RolloutMode.two_stage,
    online_passes: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="two_stage: at most this many passes of the train queries for an online test "
            "(its traffic budget; undecided by then: rolled back)",
        ),
    ] = 3,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            help="seeds the shoppers, the held-out splits and training: runs with different "
            "seeds show the run-to-run spread",
        ),
    ] = 0,
    method: Annotated[
        DemoMethod,
        typer.Option(
            help="what the tuner trains (tuner.train.method): full (the whole text model, "
            "reindexed each round), query_adapter (an adapter on the query side over the base "
            "index, no reindex) or query_tower (a copy of the text model for queries only, over "
            "the base index, no reindex)"
        ),
    ] = DemoMethod.full,
    references_only: Annotated[
        bool,
        typer.Option(
            "--references-only",
            help="run no rounds: train the references missing from the report.json in --report "
            "(a finished run's), from that run's stored sessions, and rewrite its report",
        ),
    ] = False,
) -> None:
    """Run the whole loop N rounds with simulated users and report the uplift per round.

    Starts the local services if they are not running, registers the base model, indexes the
    corpus, then each round: shoppers search through /v1/search and click (UBI events via
    Kafka), the ingest worker stores them, the tuner trains and gates a candidate, the winner is
    indexed and served, and the live system is measured on the test queries.
    """
    from clicktune.demo.loop import ClosedLoop, DemoOptions
    from clicktune.demo.processes import interrupt_on_sigterm
    from clicktune.demo.report import (
        ReportError,
        build_report,
        finished_run,
        missing_references,
        with_references,
        write_report,
    )
    from clicktune.services import manager
    from clicktune.services.errors import ServicesError
    from tuner.errors import TunerError
    from tuner.judged import DatasetError, load_collection

    try:  # bad users, a bad dataset or report folder fail before anything starts
        user = UserModel(
            click_model, eta=eta, noise=noise, trust_bias=trust_bias, dbn_continue=dbn_continue
        )
        train_method = method.train_method()
    except ValueError as exc:
        fail(str(exc))
    try:
        name = load_collection(dataset).name
        earlier = finished_run(report.resolve() / "report.json") if references_only else None
    except (DatasetError, ReportError) as exc:
        fail(str(exc))
    if earlier is not None and name != earlier["dataset"]:
        fail(
            f"--dataset {dataset} is {name!r}, but the run in {report} was on "
            f"{earlier['dataset']!r}: pass the run's own --dataset"
        )
    settings = settings_of(ctx)
    try:
        manager.up(manager.local_services(settings), typer.echo, settings.services.start_timeout_s)
    except ServicesError as exc:
        fail(str(exc))
    options = DemoOptions(
        dataset=dataset,
        rounds=rounds,
        report_dir=report.resolve(),
        users_per_query=users_per_query,
        max_steps=max_steps,
        randomize=randomize,
        explore_depth=explore_depth,
        references=references,
        score_candidates=score_candidates,
        user=user,
        rollout=rollout,
        online_passes=online_passes,
        seed=seed,
        method=train_method,
    )
    interrupt_on_sigterm()
    config_path = ctx.find_root().obj.config_path
    try:
        if earlier is not None:
            loop = ClosedLoop(options, config_path, typer.echo, run_id=earlier["run_id"])
            missing = missing_references(earlier)
            typer.echo(f"references missing from {report}: {', '.join(missing) or 'none'}")
            data = with_references(earlier, loop.references(missing))
        else:
            loop = ClosedLoop(options, config_path, typer.echo)
            results = loop.run()
            found = loop.references() if references else {}
            data = build_report(
                loop.collection.name,
                results,
                found,
                run_id=loop.run_id,
                users=user.config(),
                seed=seed,
                method=train_method.value,
            )
    except (DatasetError, TunerError, RuntimeError) as exc:
        fail(str(exc))
    paths = write_report(data, options.report_dir)
    typer.echo((options.report_dir / "report.md").read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in paths))

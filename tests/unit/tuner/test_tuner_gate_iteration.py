"""An iteration end to end on fakes and the real small model: the gate, the kill, the lineage.

Sessions are simulated on 8 unambiguous query -> document pairs that the base model already
ranks well; validation is the later half of the sessions.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from serving.models.registry import LocalRegistry
from tests.unit.tuner.test_tuner_batches import FakeSessions
from tests.unit.tuner.tuner_fakes import FakeDocuments
from tuner.batches import BatchStore, release_batch
from tuner.config import (
    BatchSettings,
    ExportSettings,
    GateSettings,
    TrainOverrides,
    TrainSettings,
    TunerSettings,
)
from tuner.iteration import IterationContext, run_training_iteration
from tuner.judged import load_collection
from tuner.sessions import Action, Session
from tuner.tracking import MlflowTracker, default_tracking_uri
from tuner.train import TrainReport

TOPICS = {
    "d0": ("cordless drill", "DEWALT 20V cordless drill driver with two batteries"),
    "d1": ("garden hose", "Flexible fifty foot garden hose that does not kink"),
    "d2": ("paint roller", "Nine inch paint roller for smooth interior walls"),
    "d3": ("ceiling fan", "Fifty two inch ceiling fan with LED light kit"),
    "d4": ("lawn mower", "Self-propelled gas lawn mower, 21 inch deck"),
    "d5": ("kitchen faucet", "Pull-down kitchen faucet in brushed nickel"),
    "d6": ("smoke detector", "Battery-powered smoke detector with ten year sensor"),
    "d7": ("door lock", "Keyless entry smart door lock with keypad"),
}
DOCS = {d: {"title": text.split(" with")[0], "text": text} for d, (_, text) in TOPICS.items()}
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def click_sessions(per_query: int = 4) -> list[Session]:
    rng = random.Random(0)
    sessions = []
    for _ in range(per_query):
        for doc, (query, _text) in TOPICS.items():
            hits = rng.sample(sorted(TOPICS), len(TOPICS))
            at = T0 + timedelta(minutes=len(sessions))
            qid = f"s{len(sessions)}"
            sessions.append(
                Session(qid, query, tuple(hits), (Action(doc, "click", hits.index(doc)),), at)
            )
    return sessions


def noisy_trainer(model, pairs, doc_texts, settings, progress=True) -> TrainReport:  # type: ignore[no-untyped-def]
    """A deliberately worse candidate: every weight gets noise of its own magnitude."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.abs().mean())
    return _report(len(pairs))


def unchanged_trainer(model, pairs, doc_texts, settings, progress=True) -> TrainReport:  # type: ignore[no-untyped-def]
    return _report(len(pairs))


def crashing_trainer(model, pairs, doc_texts, settings, progress=True) -> TrainReport:  # type: ignore[no-untyped-def]
    raise RuntimeError("killed mid-way")


def _report(pairs: int) -> TrainReport:
    return TrainReport(1, pairs, 0, 1.0, 0.9, (1.0, 0.9), 0.1, 10.0, "cpu")


@pytest.fixture()
def world(tmp_path):  # type: ignore[no-untyped-def]
    return iteration_world(tmp_path)


def iteration_world(
    tmp_path: Path, sessions: list[Session] | None = None, docs: dict | None = None
) -> tuple[IterationContext, Any]:
    """An iteration context over `sessions` (default: this module's click sessions) and
    `docs`, with MLflow on, and the batch released from them."""
    source = FakeSessions(sessions if sessions is not None else click_sessions())
    store = BatchStore(tmp_path / "batches")
    tracker = MlflowTracker(default_tracking_uri(tmp_path), "test", (tmp_path / "art").as_uri())
    context = IterationContext(
        source=source,
        store=store,
        registry=LocalRegistry(tmp_path / "models"),
        documents=FakeDocuments(docs if docs is not None else DOCS),
        text_fields=["title", "text"],
        tracker=tracker,
    )
    released = release_batch(store, source, T0 + timedelta(days=1), timedelta(0))
    return context, released


def settings(**gate: object) -> TunerSettings:
    """Eight queries validate here: fewer than the default `min_confirm_queries`."""
    return TunerSettings(
        batches=BatchSettings(validation_fraction=0.5),
        gate=GateSettings(**{"min_confirm_queries": 4, **gate}),
        train=TrainSettings(max_steps=1, batch_size=4, max_length=32),
        export=ExportSettings(int8=False),  # int8 of MiniLM adds ~40 s: test_tuner_int8_variant
    )


def mlflow_versions(tracker: MlflowTracker) -> list:  # type: ignore[type-arg]
    return tracker.client.search_model_versions("name='clicktune-text'")


def test_a_worse_candidate_is_rejected_and_nothing_is_registered(world) -> None:  # type: ignore[no-untyped-def]
    context, released = world
    result = run_training_iteration(
        released, context, settings(), trainer=noisy_trainer, progress=False
    )
    candidate, live = result.decision.candidate, result.decision.live
    print(f"\ngate on noisy candidate: {result.decision.reason}")
    assert result.status == "rejected" and result.version is None
    assert candidate["ndcg@10"] < live["ndcg@10"] and live["ndcg@10"] > 0.9
    assert "vs live" in result.decision.reason
    assert context.registry.list() == [] and mlflow_versions(context.tracker) == []
    assert result.validation_sessions == 16 and result.pairs == 16
    checks = result.decision.checks  # one set: nothing selected, all validation confirms
    assert (checks["confirm_queries"], checks["confirm_sessions"]) == (8, 16)
    assert (checks["select_queries"], checks["select_sessions"]) == (0, 0)
    assert checks["confidence"] == 0.9
    [ordinals] = result.ordinals  # the fakes' ordinals are the shown positions
    assert (ordinals.base, ordinals.checked, ordinals.mismatches) == (0, 32, 0)


def test_too_few_confirm_queries_register_nothing_and_keep_the_live_model(world) -> None:  # type: ignore[no-untyped-def]
    context, released = world
    result = run_training_iteration(
        released,
        context,
        settings(min_confirm_queries=10),
        trainer=unchanged_trainer,
        progress=False,
    )
    assert result.status == "rejected" and result.decision.undecided
    assert result.decision.reason.startswith("undecided: 8 queries, need 10")
    assert context.registry.list() == [] and mlflow_versions(context.tracker) == []


def test_a_general_set_that_does_not_decide_is_scored_for_live_and_candidate(
    world, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    context, released = world
    root = tmp_path / "judged"
    root.mkdir()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, **f}) + "\n" for d, f in DOCS.items())
    )
    queries = [{"_id": f"q{d}", "text": query} for d, (query, _) in TOPICS.items()]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "".join(f"q{d}\t{d}\t1\n" for d in TOPICS)
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    (root / "split.json").write_text(json.dumps({"train": [], "test": [q["_id"] for q in queries]}))
    context = replace(context, general=load_collection(root))
    said: list[str] = []
    result = run_training_iteration(
        released,
        context,
        settings(general_decides=False, max_general_regression=0.0),
        trainer=noisy_trainer,
        notify=said.append,
        progress=False,
    )
    decision = result.decision
    assert result.status == "rejected" and "vs live" in decision.reason  # the sessions decided
    assert decision.general_live is not None and decision.general_candidate is not None
    assert decision.general_candidate["ndcg@10"] < decision.general_live["ndcg@10"] > 0.9
    line = next(m for m in said if m.startswith("general set (test)"))
    assert f"live {decision.general_live['ndcg@10']:.4f}" in line and "recorded only" in line


def test_a_run_killed_in_training_leaves_no_version_anywhere(world) -> None:  # type: ignore[no-untyped-def]
    context, released = world
    with pytest.raises(RuntimeError, match="killed mid-way"):
        run_training_iteration(
            released, context, settings(), trainer=crashing_trainer, progress=False
        )
    assert context.registry.list() == [] and mlflow_versions(context.tracker) == []
    runs = context.tracker.client.search_runs([context.tracker.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_passing_candidate_is_registered_with_its_lineage(world, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    context, released = world
    tuner_settings = settings(enabled=False).model_copy(
        update={"search": [TrainOverrides(learning_rate=1e-5), TrainOverrides(temperature=0.1)]}
    )
    result = run_training_iteration(
        released, context, tuner_settings, trainer=unchanged_trainer, progress=False
    )
    assert result.status == "done" and result.version is not None
    assert result.version.version == "v1" and context.registry.aliases() == {"candidate": "v1"}
    assert len(result.trials) == 2
    checks = result.decision.checks  # two sets: the winner was picked on other queries
    assert checks["select_queries"] > 0 and checks["confirm_queries"] > 0
    assert checks["select_queries"] + checks["confirm_queries"] == 8
    runs = context.tracker.client.search_runs([context.tracker.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["hp-0", "hp-1"]
    assert all("val_ndcg_at_10" in r.data.metrics for r in runs)
    assert all("select_ips_dcg_at_10" in r.data.metrics for r in runs)
    assert all(r.data.params["ordinal_mismatches"] == "0" for r in runs)
    lineage = context.tracker.lineage()["v1"]
    assert lineage["batch_id"] == "batch-0001" and lineage["parent"] is None
    assert lineage["dimension"] == 384 and lineage["mlflow_aliases"] == ["candidate"]
    assert lineage["config"]["learning_rate"] == 1e-5

    from clicktune.cli import app

    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("CLICKTUNE_TUNER__MLFLOW_EXPERIMENT", "test")
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    row = json.loads(listed.stdout)["versions"][0]
    assert row["version"] == "v1" and row["mlflow"]["batch_id"] == "batch-0001"

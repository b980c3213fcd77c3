"""A worker iteration with a query-side candidate: trained over the live model's frozen encoder,
gated with adapted queries against frozen document vectors, registered as "query model over
document model", and weighed against a full candidate by the deploy policy (a tiny random BERT
whose words are told apart; the queries share no word with the documents they buy). A query
tower (a trained copy of the encoder for queries) goes the same way with a graph of its own."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

import tuner.export_query as export_query
from serving.config import EncoderSettings
from serving.encoders.encoder import OnnxTextEncoder
from serving.models.registry import LocalRegistry
from tests.unit.tuner.test_tuner_batches import FakeSessions
from tests.unit.tuner.test_tuner_export_query import no_encoder_export
from tests.unit.tuner.test_tuner_gate_iteration import unchanged_trainer
from tests.unit.tuner.tiny_encoder import build_tiny_encoder
from tests.unit.tuner.tuner_fakes import FakeDocuments
from tests.unit.tuner.unseen_pairs import DOCS, QUERIES
from tuner.batches import BatchStore, release_batch
from tuner.candidate_policy import FULL, QUERY
from tuner.config import (
    BatchSettings,
    Candidates,
    ExportSettings,
    GateSettings,
    TrainMethod,
    TrainSettings,
    TunerSettings,
    WorkerSettings,
)
from tuner.export import export_text_model
from tuner.iteration import IterationContext, run_training_iteration
from tuner.publish import model_metadata, publish
from tuner.query_adapter import encode_frozen
from tuner.sessions import Action, Session

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def click_sessions(per_query: int = 6) -> list[Session]:
    """Each query's users buy its own document, shown anywhere in a shuffled list."""
    rng = random.Random(0)
    sessions = []
    for _ in range(per_query):
        for i, query in enumerate(QUERIES):
            hits = rng.sample(sorted(DOCS), len(DOCS))
            at = T0 + timedelta(minutes=len(sessions))
            actions = (Action(f"d{i}", "click", hits.index(f"d{i}")),)
            sessions.append(Session(f"s{len(sessions)}", query, tuple(hits), actions, at))
    return sessions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny"), [*DOCS.values(), *QUERIES])


def world(tmp_path: Path, tiny: Path) -> tuple[IterationContext, Any]:
    """v1 (the tiny encoder, kind text) live over its index; one batch of click sessions."""
    registry = LocalRegistry(tmp_path / "models")
    encoder = SentenceTransformer(str(tiny), device="cpu")
    exported = export_text_model(
        encoder, tmp_path / "v1", version="v1", parent=None, base_model="tiny", max_length=32
    )
    registry.set_alias("production", publish(registry, exported.path, "v1").version)
    source = FakeSessions(click_sessions())
    store = BatchStore(tmp_path / "batches")
    context = IterationContext(
        source=source,
        store=store,
        registry=registry,
        documents=FakeDocuments({d: {"title": t} for d, t in DOCS.items()}),
        text_fields=["title"],
    )
    released = release_batch(store, source, T0 + timedelta(days=1), timedelta(0))
    return context, released


def settings(method: TrainMethod, candidates: Candidates | None = None) -> TunerSettings:
    return TunerSettings(
        batches=BatchSettings(validation_fraction=0.5),
        gate=GateSettings(min_confirm_queries=4),
        train=TrainSettings(
            method=method,
            batch_size=8,
            max_steps=150,
            max_length=32,
            warmup_ratio=0.0,
            query_adapter_learning_rate=1e-2,
        ),
        export=ExportSettings(int8=False),
        worker=WorkerSettings(candidates=candidates),
    )


def test_a_query_candidate_trains_over_the_frozen_encoder_and_registers_its_pairing(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, released = world(tmp_path, tiny)
    # The adapter is folded into v1's registered graph: the encoder is not exported again.
    monkeypatch.setattr(export_query, "export_text_model", no_encoder_export)
    said: list[str] = []
    result = run_training_iteration(
        released,
        context,
        settings(TrainMethod.query_adapter),
        notify=said.append,
        progress=False,
    )
    decision = result.decision
    print(f"\nquery candidate: {decision.reason}")
    assert result.status == "done" and result.side == QUERY
    assert decision.candidate["ips_dcg@10"] > decision.live["ips_dcg@10"] + 0.1
    version = result.version
    assert version is not None and version.kind == "query" and version.document_model == "v1"
    assert version.metrics["side"] == QUERY
    assert "frozen document model v1" in result.start
    # The document side is v1's encoder, untouched: its vectors are the live index's.
    v1 = SentenceTransformer(str(context.registry.get("v1").path / "st"), device="cpu")
    v2 = SentenceTransformer(str(version.path / "st"), device="cpu")
    docs = list(DOCS.values())
    assert np.array_equal(encode_frozen(v1, docs, 32).numpy(), encode_frozen(v2, docs, 32).numpy())
    assert context.registry.aliases() == {"production": "v1", "candidate": "v2"}


def test_with_both_candidates_the_query_side_deploys_unless_the_full_gain_pays_a_reindex(
    tmp_path: Path, tiny: Path
) -> None:
    context, released = world(tmp_path, tiny)
    result = run_training_iteration(
        released,
        context,
        settings(TrainMethod.full, Candidates.both),
        trainer=unchanged_trainer,  # the full side: the live model again, gain 0
        progress=False,
    )
    by_side = {c.side: c for c in result.candidates}
    assert set(by_side) == {FULL, QUERY}
    assert by_side[QUERY].gain > 0.1 and by_side[FULL].gain == 0.0
    assert by_side[FULL].method == "full" and by_side[QUERY].method == "query_adapter"
    assert result.choice is not None and result.choice.side == QUERY
    assert result.side == QUERY and result.version is not None
    assert result.version.kind == "query" and result.version.document_model == "v1"
    assert [v.version for v in context.registry.list()] == ["v1", "v2"]  # one registered


def test_the_next_query_round_goes_on_from_the_live_adapter_over_the_same_document_model(
    tmp_path: Path, tiny: Path
) -> None:
    context, released = world(tmp_path, tiny)
    first = run_training_iteration(
        released, context, settings(TrainMethod.query_adapter), progress=False
    )
    assert first.version is not None
    context.registry.set_alias("production", first.version.version)
    # One step that barely moves: a round that started from the identity again would rank as
    # v1 does, far below the live adapter; one that goes on from it ranks as it does.
    again = settings(TrainMethod.full, Candidates.both)
    again.train.max_steps, again.train.query_adapter_learning_rate = 1, 1e-7
    second = run_training_iteration(
        released, context, again, trainer=unchanged_trainer, progress=False
    )
    by_side = {c.side: c for c in second.candidates}
    # A full candidate over a live query model starts from its document model's encoder and is
    # gated against the query model itself: the adapter's gain is the bar it must clear.
    assert second.live.validation["ips_dcg@10"] == pytest.approx(
        first.decision.candidate["ips_dcg@10"]
    )
    assert by_side[FULL].gain < -0.1 and not by_side[FULL].passed
    assert abs(by_side[QUERY].gain) < 1e-3 and by_side[QUERY].passed
    assert second.choice is not None and second.choice.side == QUERY
    assert second.version is not None and second.version.document_model == "v1"
    assert second.version.parent == first.version.version


def tower_settings(max_steps: int = 60, learning_rate: float = 1e-3) -> TunerSettings:
    tower = settings(TrainMethod.query_tower)
    tower.train.max_steps, tower.train.learning_rate = max_steps, learning_rate
    return tower


def test_a_query_tower_trains_a_copy_for_queries_and_registers_its_own_graph(
    tmp_path: Path, tiny: Path
) -> None:
    context, released = world(tmp_path, tiny)
    result = run_training_iteration(released, context, tower_settings(), progress=False)
    decision = result.decision
    print(f"\nquery tower: {decision.reason}")
    assert result.status == "done" and result.side == QUERY
    assert decision.candidate["ips_dcg@10"] > decision.live["ips_dcg@10"] + 0.1
    version = result.version
    assert version is not None and version.kind == "query" and version.document_model == "v1"
    assert version.metrics["side"] == QUERY and "query_tower" in model_metadata(version)
    v1 = context.registry.get("v1").path
    # The document side is v1's encoder, untouched; the queries go through a graph of their own.
    frozen = SentenceTransformer(str(v1 / "st"), device="cpu")
    st = SentenceTransformer(str(version.path / "st"), device="cpu")
    docs = list(DOCS.values())
    assert np.array_equal(
        encode_frozen(frozen, docs, 32).numpy(), encode_frozen(st, docs, 32).numpy()
    )
    served = OnnxTextEncoder.from_dir(version.path, EncoderSettings(max_length=32))
    tower = SentenceTransformer(str(version.path / "query_st"), device="cpu")
    torch_queries = encode_frozen(tower, QUERIES, 32).numpy()
    assert np.sum(served.encode(QUERIES) * torch_queries, axis=1).min() >= 0.9999
    before = OnnxTextEncoder.from_dir(v1, EncoderSettings(max_length=32)).encode(QUERIES)
    assert np.sum(served.encode(QUERIES) * before, axis=1).max() < 0.99  # the tower learned
    assert context.registry.aliases() == {"production": "v1", "candidate": "v2"}


def test_the_next_tower_round_goes_on_from_the_live_tower(tmp_path: Path, tiny: Path) -> None:
    context, released = world(tmp_path, tiny)
    first = run_training_iteration(released, context, tower_settings(), progress=False)
    assert first.version is not None
    context.registry.set_alias("production", first.version.version)
    # One step that barely moves: a round restarted from v1's encoder would rank as v1 does.
    second = run_training_iteration(released, context, tower_settings(1, 1e-9), progress=False)
    assert second.live.validation["ips_dcg@10"] == pytest.approx(
        first.decision.candidate["ips_dcg@10"]
    )
    assert second.decision.candidate["ips_dcg@10"] == pytest.approx(
        first.decision.candidate["ips_dcg@10"], abs=1e-3
    )
    assert second.version is not None and second.version.document_model == "v1"
    assert second.version.parent == first.version.version

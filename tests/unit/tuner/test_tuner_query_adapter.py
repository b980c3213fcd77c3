"""The query adapter over a frozen encoder: the identity at first, learns from clicks, and never
touches the document side (a tiny random 2-layer BERT, so it all runs in about a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tests.unit.tuner.tiny_encoder import build_tiny_encoder
from tests.unit.tuner.unseen_pairs import DOCS, PAIRS, QUERIES
from tuner.config import TrainMethod, TrainSettings
from tuner.errors import TrainConfigError
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.query_adapter import (
    QueryAdapter,
    encode_frozen,
    encode_queries,
    fine_tune_query_adapter,
    load_adapter,
    save_adapter,
)
from tuner.train import fine_tune

SETTINGS = TrainSettings(
    batch_size=8,
    max_steps=150,
    max_length=32,
    warmup_ratio=0.0,
    query_adapter_rank=8,
    query_adapter_learning_rate=1e-2,
)
HELD_OUT = ["the yellow moon", "zork and frotz", "bike chords deadline", "a cat"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [*DOCS.values(), *QUERIES, *HELD_OUT]
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny"), texts)


@pytest.fixture()
def encoder(tiny_path: Path) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_path), device="cpu")


def full_batch_loss(encoder: SentenceTransformer, adapter: QueryAdapter) -> float:
    """The training loss over all pairs at once, documents from the frozen encoder."""
    queries = torch.from_numpy(encode_queries(encoder, adapter, QUERIES, 32))
    docs = encode_frozen(encoder, [DOCS[p.positive_id] for p in PAIRS], 32)
    weights = torch.tensor([p.weight for p in PAIRS])
    return WeightedInfoNCELoss(SETTINGS.temperature)(queries, docs, weights).item()


def top1(encoder: SentenceTransformer, adapter: QueryAdapter) -> float:
    """The share of queries whose own document scores highest of the eight."""
    docs = encode_frozen(encoder, [DOCS[f"d{i}"] for i in range(8)], 32).numpy()
    scores = encode_queries(encoder, adapter, QUERIES, 32) @ docs.T  # (8, 8)
    return float((scores.argmax(axis=1) == np.arange(8)).mean())


@pytest.mark.parametrize("rank", [0, 8])
def test_an_untrained_adapter_embeds_queries_as_the_frozen_encoder(encoder, rank: int) -> None:
    texts = QUERIES + HELD_OUT
    adapted = encode_queries(encoder, QueryAdapter(32, rank), texts, 32)
    base = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(adapted, base, atol=1e-6)


def test_training_lowers_the_loss_and_leaves_the_document_side_untouched(encoder) -> None:
    weights = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    docs_before = encode_frozen(encoder, list(DOCS.values()), 32)
    identity_loss = full_batch_loss(encoder, QueryAdapter(32, 8))

    run = fine_tune_query_adapter(encoder, PAIRS, DOCS, SETTINGS, progress=False)

    print(
        f"\nquery adapter: {run.adapter.parameters_count} parameters, {run.report.steps} steps "
        f"in {run.report.seconds:.2f} s, loss {run.report.first_loss:.3f} -> "
        f"{run.report.final_loss:.3f}"
    )
    assert run.adapter.parameters_count == 2 * 32 * 8
    assert run.report.steps == 150 and run.report.final_loss < 0.5 * run.report.first_loss
    assert full_batch_loss(encoder, run.adapter) < 0.5 * identity_loss
    assert all(torch.equal(p, weights[n]) for n, p in encoder.named_parameters())
    assert all(p.grad is None for p in encoder.parameters())
    assert torch.equal(encode_frozen(encoder, list(DOCS.values()), 32), docs_before)
    # What a user sees: each query's clicked document now comes first far more often.
    assert top1(encoder, run.adapter) >= 0.5 > top1(encoder, QueryAdapter(32, 8))


def test_the_adapter_round_trips_through_its_file(encoder, tmp_path: Path) -> None:
    run = fine_tune_query_adapter(
        encoder, PAIRS, DOCS, SETTINGS.model_copy(update={"max_steps": 5}), progress=False
    )
    save_adapter(run.adapter, tmp_path / "a.safetensors")
    loaded = load_adapter(tmp_path / "a.safetensors", run.adapter.get_config_dict())
    np.testing.assert_array_equal(
        encode_queries(encoder, loaded, HELD_OUT, 32),
        encode_queries(encoder, run.adapter, HELD_OUT, 32),
    )


def test_fine_tune_loops_refuse_the_query_adapter_method(encoder) -> None:
    """method: query_adapter must never run a full fine-tune of the model in its place."""
    settings = SETTINGS.model_copy(update={"method": TrainMethod.query_adapter})
    weights = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    with pytest.raises(TrainConfigError, match="fine_tune_query_adapter"):
        fine_tune(encoder, PAIRS, DOCS, settings, progress=False)
    assert all(torch.equal(p, weights[n]) for n, p in encoder.named_parameters())


@pytest.mark.parametrize("rank", [-1, 33])
def test_a_rank_outside_the_dimension_is_refused(rank: int) -> None:
    with pytest.raises(TrainConfigError, match=f"rank {rank}"):
        QueryAdapter(32, rank)

"""What reaches the loss in a real training step: the pairs' weights and the in-batch mask.

A tiny random sentence-transformers model (2 layers, built into tmp_path) trains one step of
`tuner.train.fine_tune` (plain, and with the gradient cache); the loss module's `forward` is
wrapped to record its inputs.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from tests.integration.worker_support import build_tiny_st_model
from tests.unit.tuner.tuner_fakes import session
from tuner.config import PoolingSettings, TrainSettings, TunerSettings
from tuner.effective_batch import kish
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import PairStats, TrainingPair, query_key
from tuner.pooling import pairs_of_round
from tuner.propensity import PowerLawPropensity
from tuner.train import fine_tune, in_batch_mask, shuffled_batches

DOCS = {
    "d0": "red cordless drill",
    "d1": "blue hand saw",
    "d2": "red hammer drill",
    "d3": "green claw hammer",
    "d4": "old hemp rope",
    "d5": "new duct tape",
}
PAIRS = [  # "red drill" has two positives: each must be masked as the other's negative
    TrainingPair("red drill", "d0", 1.0, ("d1",)),
    TrainingPair("red drill", "d2", 5.0),
    TrainingPair("blue saw", "d1", 2.0, ("d0",)),
    TrainingPair("green hammer", "d3", 0.5),
    TrainingPair("old rope", "d4", 3.0, ("d5",)),
    TrainingPair("new tape", "d5", 0.25),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    texts = [*DOCS.values(), *(p.query for p in PAIRS)]
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), texts)


@pytest.fixture()
def loss_inputs(monkeypatch):  # type: ignore[no-untyped-def]
    """The bound arguments of every `WeightedInfoNCELoss.forward` call, in call order."""
    calls: list[dict[str, Any]] = []
    forward = WeightedInfoNCELoss.forward
    signature = inspect.signature(forward)

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        calls.append({k: v for k, v in bound.arguments.items() if k != "self"})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(WeightedInfoNCELoss, "forward", spy)
    return calls


def one_step(model_dir, pairs, settings=None):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    settings = settings or TrainSettings(batch_size=len(pairs), max_steps=1, max_length=16)
    return fine_tune(model, pairs, DOCS, settings, progress=False), settings


def test_the_pairs_weights_and_the_positive_mask_reach_the_loss(model_dir, loss_inputs) -> None:  # type: ignore[no-untyped-def]
    report, settings = one_step(model_dir, PAIRS)
    [call] = loss_inputs
    batch = next(shuffled_batches(PAIRS, len(PAIRS), settings.seed))  # the step's order
    assert torch.equal(call["weights"].cpu(), torch.tensor([p.weight for p in batch]))

    candidates = [p.positive_id for p in batch] + [
        p.hard_negative_ids[0] for p in batch if p.hard_negative_ids
    ]
    positives = positives_of(PAIRS)
    repeated = [c in candidates[:j] for j, c in enumerate(candidates)]
    expected = torch.tensor(
        [
            [
                c in positives[query_key(p.query)] or r
                for c, r in zip(candidates, repeated, strict=True)
            ]
            for p in batch
        ]
    )
    mask = call["mask"]
    assert mask is not None and torch.equal(mask.cpu(), expected)
    off_diagonal = expected & ~torch.eye(len(batch), len(candidates), dtype=torch.bool)
    # d0 / d2 for each other in the "red drill" rows (2); the hard negatives d1, d0 and d5 are
    # every one a second copy of a positive in the batch, so their columns count for no row (18)
    assert int(off_diagonal.sum()) == 2 + 3 * len(batch)
    assert call["hard_negatives"].shape[0] == len(candidates) - len(batch) == 3
    assert report.effective_batch == pytest.approx(kish(p.weight for p in PAIRS), abs=1e-3)


def positives_of(pairs):  # type: ignore[no-untyped-def]
    return {
        query_key(q): {p.positive_id for p in pairs if query_key(p.query) == query_key(q)}
        for q in {p.query for p in pairs}
    }


SHARED = [  # d0 is bought for two different queries; d3 is the hard negative of two rows
    TrainingPair("red drill", "d0", 1.0, ("d3",)),
    TrainingPair("cordless drill", "d0", 2.0),
    TrainingPair("blue saw", "d1", 1.0, ("d3",)),
    TrainingPair("old rope", "d4", 1.0),
]


def test_a_document_twice_in_a_batch_counts_once_as_a_negative(model_dir, loss_inputs) -> None:  # type: ignore[no-untyped-def]
    _, settings = one_step(model_dir, SHARED)
    [call] = loss_inputs
    batch = next(shuffled_batches(SHARED, len(SHARED), settings.seed))
    candidates = [p.positive_id for p in batch] + ["d3", "d3"]
    mask = call["mask"].cpu()
    assert mask.shape == (4, 6)
    first_d0 = candidates.index("d0")
    second_d0 = candidates.index("d0", first_d0 + 1)
    for row, pair in enumerate(batch):
        # the second copies of d0 and d3 count for no row; the first d3 counts for every row
        assert bool(mask[row, second_d0]) and bool(mask[row, 5]) and not bool(mask[row, 4])
        # the first d0 is no negative for either drill row (for the other drill query it is
        # the same document as its own positive), a negative for the others
        assert bool(mask[row, first_d0]) == (pair.positive_id == "d0")
    # per row three: its own positive (a drill row: one copy of d0), the other copy of d0 or
    # the second d0, and the second d3
    assert int(mask.sum()) == 3 * 4


def test_the_mask_reaches_the_loss_of_a_cached_step(model_dir, loss_inputs) -> None:  # type: ignore[no-untyped-def]
    settings = TrainSettings(batch_size=6, mini_batch_size=2, max_steps=1, max_length=16)
    one_step(model_dir, PAIRS, settings)
    [call] = loss_inputs
    batch = next(shuffled_batches(PAIRS, len(PAIRS), settings.seed))
    candidates = [p.positive_id for p in batch] + [
        p.hard_negative_ids[0] for p in batch if p.hard_negative_ids
    ]
    expected = in_batch_mask(batch, candidates, positives_of(PAIRS))
    assert call["mask"] is not None and torch.equal(call["mask"].cpu(), expected)
    assert call["queries"].shape[0] == 6 and call["positives"].shape[0] == 6
    assert call["hard_negatives"].shape[0] == 3


def test_examination_weights_of_hard_negatives_reach_the_loss(model_dir, loss_inputs) -> None:  # type: ignore[no-untyped-def]
    weighted = [
        TrainingPair("red drill", "d0", 1.0, ("d1", "d3"), (0.5, 0.25)),
        TrainingPair("old rope", "d4", 1.0, ("d5",), (0.2,)),
        TrainingPair("new tape", "d5", 1.0),
    ]
    _, settings = one_step(model_dir, weighted)
    [call] = loss_inputs
    batch = next(shuffled_batches(weighted, len(weighted), settings.seed))
    expected = [p.negative_weights[0] for p in batch if p.hard_negative_ids]
    assert call["negative_weights"].cpu().tolist() == pytest.approx(expected)


def test_pooled_weights_reach_the_loss_within_their_cap(model_dir, loss_inputs) -> None:  # type: ignore[no-untyped-def]
    hits = ["d1", "d3", "d4", "d5", "d0", "d2"]
    sessions = [session("red drill", hits, ("d0", "purchase"), query_id=str(i)) for i in range(3)]
    sessions += [
        session("blue saw", hits, ("d1", "click"), query_id="s"),
        *[session("red drill", hits, ("d2", "click"), query_id=f"c{i}") for i in range(2)],
    ]
    tuner = TunerSettings(train=TrainSettings(pooling=PoolingSettings(enabled=True, max_weight=4)))
    pairs = pairs_of_round(sessions, tuner, PowerLawPropensity(1.0), PairStats())
    # d0 was bought thrice at rank 4 in 5 "red drill" searches: (15 + mu) / (5 x 0.2 + 1) > 4
    assert len(pairs) == 3 and max(p.weight for p in pairs) == 4.0
    one_step(model_dir, pairs)
    [call] = loss_inputs
    assert sorted(call["weights"].tolist()) == pytest.approx(sorted(p.weight for p in pairs))
    assert float(call["weights"].max()) <= 4.0

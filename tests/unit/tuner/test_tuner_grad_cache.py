"""The gradient-cache step gives the plain step's loss and gradients, in bounded pieces.

A tiny random sentence-transformers model (2 layers, dropout 0.1) takes one batch through
`tuner.train.train_step` twice, plain and with `mini_batch_size`, from the same weights and
random state; the parameters' gradients must agree.
"""

from __future__ import annotations

import pytest
import torch

from tests.integration.worker_support import build_tiny_st_model
from tests.unit.tuner.tool_catalogue import DOCS
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair
from tuner.train import positives_by_query, train_step

PAIRS = [
    TrainingPair("red drill", "d0", 1.0, ("d1",)),
    TrainingPair("red drill", "d2", 5.0),
    TrainingPair("blue saw", "d1", 2.0, ("d6",)),
    TrainingPair("green hammer", "d3", 0.5, ("d2",), (0.3,)),
    TrainingPair("old rope", "d4", 3.0, ("d5",)),
    TrainingPair("new tape", "d5", 0.25),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    texts = [*DOCS.values(), *(p.query for p in PAIRS)]
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), texts)


def gradients(model_dir, mini_batch_size, train_mode=False):  # type: ignore[no-untyped-def]
    """The loss and every parameter's gradient after one step on PAIRS."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 16
    model.train(train_mode)
    torch.manual_seed(7)
    loss = train_step(
        model,
        WeightedInfoNCELoss(0.05),
        PAIRS,
        doc_texts=DOCS,
        positives=positives_by_query(PAIRS),
        device="cpu",
        mini_batch_size=mini_batch_size,
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def assert_same_gradients(plain, cached) -> None:  # type: ignore[no-untyped-def]
    (plain_loss, plain_grads), (cached_loss, cached_grads) = plain, cached
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("mini_batch_size", [1, 2, 4])
def test_cached_step_gives_the_plain_steps_gradients(model_dir, mini_batch_size) -> None:  # type: ignore[no-untyped-def]
    plain = gradients(model_dir, None)
    assert any(float(g.abs().max()) > 0 for g in plain[1].values())
    assert_same_gradients(plain, gradients(model_dir, mini_batch_size))


def test_cached_step_replays_dropout(model_dir) -> None:  # type: ignore[no-untyped-def]
    """In train mode the second pass must draw the first pass's dropout masks: with one
    mini-batch per text group both steps draw the same masks, so the gradients agree only if
    the cache replays them."""
    plain = gradients(model_dir, None, train_mode=True)
    assert_same_gradients(plain, gradients(model_dir, 16, train_mode=True))

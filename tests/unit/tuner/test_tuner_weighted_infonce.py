from __future__ import annotations

import math

import pytest
import torch

from tuner.losses.weighted_infonce import WeightedInfoNCELoss

R = 1 / math.sqrt(2)
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P = torch.tensor([[1.0, 0.0], [R, R]])
N = torch.tensor([[-1.0, 0.0]])


def lse_loss(positive: float, *others: float) -> float:
    """-log softmax of `positive` among itself and `others`."""
    return math.log(1 + sum(math.exp(o - positive) for o in others))


def test_matches_hand_computed_in_batch_case() -> None:
    loss = WeightedInfoNCELoss(temperature=1.0)(Q, P, torch.tensor([1.0, 1.0]))
    l1 = lse_loss(1.0, R)  # row 1: cos to p1 = 1, to p2 = 1/sqrt(2)
    l2 = lse_loss(R, 0.0)  # row 2: cos to p2 = 1/sqrt(2), to p1 = 0
    assert loss.item() == pytest.approx((l1 + l2) / 2, rel=1e-6)


def test_hard_negatives_and_weights_enter_as_in_the_formula() -> None:
    loss = WeightedInfoNCELoss(temperature=0.5)(Q, P, torch.tensor([1.0, 3.0]), N)
    l1 = lse_loss(1.0 / 0.5, R / 0.5, -1.0 / 0.5)
    l2 = lse_loss(R / 0.5, 0.0, 0.0)
    assert loss.item() == pytest.approx((1 * l1 + 3 * l2) / 4, rel=1e-6)


def test_weights_change_the_result() -> None:
    loss_fn = WeightedInfoNCELoss(temperature=0.1)
    even = loss_fn(Q, P, torch.tensor([1.0, 1.0]))
    skewed = loss_fn(Q, P, torch.tensor([1.0, 5.0]))
    assert skewed.item() != pytest.approx(even.item())


def test_masked_candidates_do_not_count_as_negatives() -> None:
    loss_fn = WeightedInfoNCELoss(temperature=1.0)
    mask = torch.tensor([[False, True], [True, True]])  # diagonal is never masked
    loss = loss_fn(Q, P, torch.ones(2), mask=mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_pulls_query_towards_its_positive() -> None:
    queries = Q.clone().requires_grad_(True)
    positives = P.clone().requires_grad_(True)
    loss = WeightedInfoNCELoss(temperature=0.05)(queries, positives, torch.ones(2), N)
    loss.backward()
    assert queries.grad is not None and positives.grad is not None
    assert queries.grad.abs().sum() > 0 and positives.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = WeightedInfoNCELoss(temperature=0.05)(
            queries - 0.1 * queries.grad, positives - 0.1 * positives.grad, torch.ones(2), N
        )
    assert stepped < loss


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="0"):
        WeightedInfoNCELoss(temperature=0.0)

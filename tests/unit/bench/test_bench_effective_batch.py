"""bench/effective_batch's figures: Kish effective batch per trainer batch, and the top share."""

from __future__ import annotations

import pytest

from bench.effective_batch import batch_figures

pytestmark = pytest.mark.unit


def test_equal_weights_make_full_batches() -> None:
    figures = batch_figures([2.0] * 64, batch_size=32, epochs=3)
    assert figures["mean_ess"] == figures["min_ess"] == 32.0
    assert figures["mean_top_share"] == pytest.approx(1 / 32, abs=1e-3)


def test_one_heavy_pair_shrinks_its_batch() -> None:
    weights = [50.0] + [1.0] * 31
    figures = batch_figures(weights, batch_size=32, epochs=1)
    assert figures["min_ess"] == pytest.approx(81**2 / 2531, abs=0.01)  # ~2.6
    assert figures["mean_top_share"] == pytest.approx(50 / 81, abs=1e-3)
    assert figures["pairs"] == 32 and figures["max_weight"] == 50.0

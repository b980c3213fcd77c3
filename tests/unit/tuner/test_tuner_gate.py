"""The gate decision, with the numbers a user reads in a rejection."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.config import GateSettings
from tuner.gate import decide, lower_bound

LIVE = {"ndcg@10": 0.50, "mrr@10": 0.4, "recall@10": 0.6, "recall@100": 0.9}


def scores(ndcg: float) -> dict[str, float]:
    return {**LIVE, "ndcg@10": ndcg}


def gate(**settings: float | bool) -> GateSettings:
    """A gate on click-label nDCG@10 (the default primary metric is ips_dcg@10)."""
    return GateSettings(primary_metric="ndcg@10", **settings)


def test_a_better_candidate_passes() -> None:
    decision = decide(gate(min_improvement=0.01), scores(0.55), LIVE)
    assert decision.passed and decision.checks["improvement"] == 0.05


def test_a_candidate_that_is_not_better_by_the_margin_is_rejected_with_numbers() -> None:
    decision = decide(gate(min_improvement=0.01), scores(0.505), LIVE)
    assert not decision.passed
    assert "0.5050 vs live 0.5000" in decision.reason and "+0.0050" in decision.reason


def test_a_general_set_regression_past_the_bound_is_rejected() -> None:
    settings = gate(max_general_regression=0.02)
    decision = decide(settings, scores(0.6), LIVE, scores(0.45), LIVE)
    assert not decision.passed and "fell 0.0500" in decision.reason
    assert decide(settings, scores(0.6), LIVE, scores(0.49), LIVE).passed


def test_a_general_set_that_does_not_decide_is_recorded_only() -> None:
    settings = gate(max_general_regression=0.02, general_decides=False)
    decision = decide(settings, scores(0.6), LIVE, scores(0.45), LIVE)
    assert decision.passed and decision.checks["general_regression"] == 0.05
    assert decision.general_candidate == scores(0.45) and decision.general_live == LIVE
    rejected = decide(settings, scores(0.5), LIVE, scores(0.7), LIVE)  # sessions decide alone
    assert not rejected.passed and rejected.general_candidate == scores(0.7)


def test_no_validation_data_is_a_rejection_unless_the_gate_is_off() -> None:
    assert not decide(GateSettings(), {}, {}).passed
    assert decide(GateSettings(enabled=False), {}, {}).passed


def test_the_default_gates_on_ips_dcg_and_checks_the_general_set_on_ndcg() -> None:
    live = {**LIVE, "ips_dcg@10": 2.70}
    candidate = {**LIVE, "ndcg@10": 0.45, "ips_dcg@10": 2.81}  # click-label nDCG lower
    settings = GateSettings(max_general_regression=0.02)
    decision = decide(settings, candidate, live)
    assert decision.passed and decision.checks["improvement"] == 0.11
    rejected = decide(settings, candidate, live, scores(0.45), LIVE)
    assert not rejected.passed
    assert "general set ndcg@10 fell 0.0500" in rejected.reason


def test_a_gain_within_the_noise_of_the_paired_sessions_is_rejected() -> None:
    rng = np.random.default_rng(3)
    live_values = rng.exponential(1.5, size=4000)
    noise = rng.normal(0.0, 0.5, size=4000)
    noisy = live_values + 0.0005 + (noise - noise.mean())  # +0.0005 exactly, sd 0.5
    live = {**LIVE, "ips_dcg@10": float(live_values.mean())}
    candidate = {**LIVE, "ips_dcg@10": float(noisy.mean())}
    assert candidate["ips_dcg@10"] > live["ips_dcg@10"]
    decision = decide(GateSettings(), candidate, live, paired=(noisy, live_values))
    assert not decision.passed
    assert "its 90% lower bound -0.0" in decision.reason
    assert decision.checks["improvement_lower_bound"] < 0 < decision.checks["improvement"]
    mean_only = decide(GateSettings(confidence=0.5), candidate, live, paired=(noisy, live_values))
    assert mean_only.passed


def test_a_clear_paired_gain_passes_with_its_lower_bound() -> None:
    rng = np.random.default_rng(4)
    live_values = rng.exponential(1.5, size=4000)
    better = live_values + rng.normal(0.03, 0.5, size=4000)
    live = {**LIVE, "ips_dcg@10": float(live_values.mean())}
    candidate = {**LIVE, "ips_dcg@10": float(better.mean())}
    decision = decide(GateSettings(), candidate, live, paired=(better, live_values))
    assert decision.passed and "lower bound +0.0" in decision.reason
    assert 0 < decision.checks["improvement_lower_bound"] < decision.checks["improvement"]


def test_lower_bound_is_the_mean_minus_z_standard_errors() -> None:
    differences = np.array([0.1, 0.3, -0.1, 0.5])  # mean 0.2, sd 0.2582, n 4
    assert lower_bound(differences, 0.9) == pytest.approx(0.2 - 1.28155 * 0.2582 / 2, abs=1e-4)
    assert lower_bound(np.array([0.7]), 0.9) == 0.7

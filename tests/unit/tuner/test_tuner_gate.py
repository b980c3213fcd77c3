"""The gate decision, with the numbers a user reads in a rejection."""

from __future__ import annotations

from tuner.config import GateSettings
from tuner.gate import decide

LIVE = {"ndcg@10": 0.50, "mrr@10": 0.4, "recall@10": 0.6, "recall@100": 0.9}


def scores(ndcg: float) -> dict[str, float]:
    return {**LIVE, "ndcg@10": ndcg}


def gate(**settings: float) -> GateSettings:
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

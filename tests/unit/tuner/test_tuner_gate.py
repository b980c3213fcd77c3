"""The gate decision, with the numbers a user reads in a rejection."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.config import GateSettings
from tuner.gate import Paired, decide, lower_bound, t_quantile

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
    assert not decide(GateSettings(primary_metric="ips_dcg@10"), {}, {}).passed
    assert decide(GateSettings(enabled=False), {}, {}).passed


def test_the_default_gates_on_ips_dcg_and_checks_the_general_set_on_ndcg() -> None:
    live = {**LIVE, "ips_dcg@10": 2.70}
    candidate = {**LIVE, "ndcg@10": 0.45, "ips_dcg@10": 2.81}  # click-label nDCG lower
    settings = GateSettings(primary_metric="ips_dcg@10", max_general_regression=0.02)
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
    independent = Paired(noisy, live_values, [f"q{i}" for i in range(4000)])  # a query each
    decision = decide(
        GateSettings(primary_metric="ips_dcg@10"), candidate, live, paired=independent
    )
    assert not decision.passed
    assert "its 90% lower bound -0.0" in decision.reason
    assert decision.checks["improvement_lower_bound"] < 0 < decision.checks["improvement"]
    mean_only = decide(
        GateSettings(primary_metric="ips_dcg@10", confidence=0.5),
        candidate,
        live,
        paired=independent,
    )
    assert mean_only.passed


def test_a_clear_paired_gain_passes_with_its_lower_bound() -> None:
    rng = np.random.default_rng(4)
    live_values = rng.exponential(1.5, size=4000)
    better = live_values + rng.normal(0.03, 0.5, size=4000)
    live = {**LIVE, "ips_dcg@10": float(live_values.mean())}
    candidate = {**LIVE, "ips_dcg@10": float(better.mean())}
    paired = Paired(better, live_values, [f"q{i}" for i in range(4000)])
    decision = decide(GateSettings(primary_metric="ips_dcg@10"), candidate, live, paired=paired)
    assert decision.passed and "lower bound +0.0" in decision.reason
    assert 0 < decision.checks["improvement_lower_bound"] < decision.checks["improvement"]


def test_lower_bound_is_the_mean_of_the_query_means_minus_t_standard_errors() -> None:
    differences = np.array([0.1, 0.3, -0.1, 0.5])  # mean 0.2, sd 0.2582, n 4: t_3(0.9) 1.6377
    assert lower_bound(differences, 0.9) == pytest.approx(0.2 - 1.63774 * 0.2582 / 2, abs=1e-4)
    assert lower_bound(np.array([0.7]), 0.9) == 0.7
    # per query: a (0.1, 0.3) -> 0.2, b -> -0.1, c (0.5, 0.7) -> 0.6; mean 0.2333, sd 0.3512
    clustered = lower_bound(np.array([0.1, 0.3, -0.1, 0.5, 0.7]), 0.9, list("aabcc"))
    assert clustered == pytest.approx(0.23333 - 1.88562 * 0.35119 / np.sqrt(3), abs=1e-4)


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 9, 19, 20, 99, 1000):
        for p in (0.5, 0.8, 0.9, 0.95, 0.99):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-7)


def clustered_differences(rng: np.random.Generator, queries: int, per_query: int) -> np.ndarray:
    """Paired differences of a candidate that is no better: zero on average, but each query's
    sessions agree (a query effect of sd 1, session noise of sd 0.1)."""
    effect = rng.normal(0.0, 1.0, size=queries)
    return np.repeat(effect, per_query) + rng.normal(0.0, 0.1, size=queries * per_query)


def test_sessions_of_one_query_count_as_one_query_in_the_bound() -> None:
    """Forty queries of ten agreeing sessions each: the bound must be about as wide as forty
    values allow, not four hundred, and a no-better candidate must pass at most about as often
    as the confidence allows (10% at 0.9). Sessions taken as independent pass far more."""
    queries = [f"q{i}" for i in range(40) for _ in range(10)]
    alone = [f"s{i}" for i in range(400)]  # every session its own query: the naive bound
    settings = GateSettings(primary_metric="ips_dcg@10", confidence=0.9)
    rng = np.random.default_rng(11)
    passed = {"clustered": 0, "naive": 0}
    repetitions = 400
    for _ in range(repetitions):
        differences = clustered_differences(rng, 40, 10)
        live_values = np.full(400, 2.0)
        candidate = {**LIVE, "ips_dcg@10": 2.0 + float(differences.mean())}
        live = {**LIVE, "ips_dcg@10": 2.0}
        for name, keys in (("clustered", queries), ("naive", alone)):
            paired = Paired(live_values + differences, live_values, keys)
            passed[name] += decide(settings, candidate, live, paired=paired).passed
    assert passed["clustered"] / repetitions <= 0.13  # 0.075 on these seeds
    assert passed["naive"] / repetitions >= 0.25  # 0.32 on these seeds
    differences = clustered_differences(np.random.default_rng(12), 40, 10)
    spread = differences.mean() - lower_bound(differences, 0.9, queries)
    assert spread > 2.5 * (differences.mean() - lower_bound(differences, 0.9, alone))


def test_too_few_confirm_queries_leave_the_decision_undecided() -> None:
    values = np.linspace(1.0, 2.0, 12)
    paired = Paired(values + 1.0, values, [f"q{i % 6}" for i in range(12)], 5, 9)
    candidate, live = {**LIVE, "ips_dcg@10": 2.5}, {**LIVE, "ips_dcg@10": 1.5}
    decision = decide(
        GateSettings(primary_metric="ips_dcg@10", min_confirm_queries=8),
        candidate,
        live,
        paired=paired,
    )
    assert not decision.passed and decision.undecided
    assert decision.reason.startswith("undecided: 6 queries, need 8")
    assert "the live model stays" in decision.reason
    assert decide(
        GateSettings(primary_metric="ips_dcg@10", min_confirm_queries=6),
        candidate,
        live,
        paired=paired,
    ).passed


def test_every_decision_states_its_confidence_and_both_parts() -> None:
    rng = np.random.default_rng(5)
    live_values = rng.exponential(1.5, size=200)
    paired = Paired(live_values + 0.5, live_values, [f"q{i % 25}" for i in range(200)], 20, 150)
    candidate = {**LIVE, "ips_dcg@10": float(live_values.mean()) + 0.5}
    live = {**LIVE, "ips_dcg@10": float(live_values.mean())}
    decision = decide(
        GateSettings(primary_metric="ips_dcg@10", confidence=0.95), candidate, live, paired=paired
    )
    assert decision.passed
    assert decision.checks["confidence"] == 0.95
    assert (decision.checks["confirm_queries"], decision.checks["confirm_sessions"]) == (25, 200)
    assert (decision.checks["select_queries"], decision.checks["select_sessions"]) == (20, 150)
    assert "confidence 95%; confirm part 25 queries, 200 sessions" in decision.reason
    assert "select part 20 queries, 150 sessions" in decision.reason
    nothing_selected = Paired(paired.candidate, paired.live, paired.queries)
    rejected = decide(
        GateSettings(primary_metric="ips_dcg@10", min_improvement=1.0),
        candidate,
        live,
        paired=nothing_selected,
    )
    assert not rejected.passed and "no select part (one hyperparameter set" in rejected.reason

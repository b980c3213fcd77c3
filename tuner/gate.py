"""The quality gate: a candidate is registered only if it measurably beats the live model.

Both models are scored on the same data: the batch's validation sessions (primary metric,
nDCG@10 by default) and, when one is configured, a fixed general query set that catches
catastrophic forgetting. The candidate passes when

    candidate[primary] - live[primary] > min_improvement                 (validation sessions)
    live_general[m] - candidate_general[m] <= max_general_regression

where m is the primary metric, or nDCG@10 when the primary metric is the sessions-only
`ips_dcg@10` (a judged collection has true labels and no clicks to weight). With
`gate.general_decides` false the general figures are recorded and never decide. The decision
keeps the numbers, so a rejection says exactly by how much it missed.

A mean over a few thousand noisy sessions moves by chance: on homedepot-dev a third round
passed at ips_dcg@10 +0.0004 and was worse on the test queries. So for `ips_dcg@10`, whose
per-session values are paired (same sessions, both models), the improvement that must clear
`min_improvement` is the one-sided lower confidence bound of the mean paired difference,
mean - z * SE at `gate.confidence` (0.5: the mean itself).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from tuner.config import GateSettings

__all__ = ["GateDecision", "decide", "lower_bound"]

log = logging.getLogger(__name__)
GENERAL_FALLBACK = "ndcg@10"  # the general set's metric when the primary is sessions-only
PAIRED_METRIC = "ips_dcg@10"  # the metric with per-session values (tuner.session_eval)


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be registered, why, and the numbers it was judged on."""

    passed: bool
    reason: str
    candidate: dict[str, float]
    live: dict[str, float]
    general_candidate: dict[str, float] | None = None
    general_live: dict[str, float] | None = None
    checks: dict[str, float] = field(default_factory=dict)


def decide(
    settings: GateSettings,
    candidate: dict[str, float],
    live: dict[str, float],
    general_candidate: dict[str, float] | None = None,
    general_live: dict[str, float] | None = None,
    paired: tuple[np.ndarray, np.ndarray] | None = None,
) -> GateDecision:
    """Apply the gate to the metrics of the candidate and the live model; `paired` holds their
    per-session ips_dcg@10 values on the same validation sessions (candidate, live)."""
    metric = settings.primary_metric
    checks: dict[str, float] = {}

    def verdict(passed: bool, reason: str) -> GateDecision:
        return GateDecision(
            passed, reason, candidate, live, general_candidate, general_live, dict(checks)
        )

    if not settings.enabled:
        return verdict(True, "gate disabled (tuner.gate.enabled = false)")
    if not candidate or not live:
        reason = "no validation session with an outcome: the gate cannot measure the candidate"
        return verdict(False, reason)
    gain = candidate[metric] - live[metric]
    checks["improvement"] = round(gain, 6)
    bound, note = gain, ""
    if metric == PAIRED_METRIC and paired is not None and settings.confidence > 0.5:
        bound = lower_bound(paired[0] - paired[1], settings.confidence)
        checks["improvement_lower_bound"] = round(bound, 6)
        note = f", its {settings.confidence:.0%} lower bound {bound:+.4f}"
    if bound <= settings.min_improvement:
        reason = (
            f"{metric} {candidate[metric]:.4f} vs live {live[metric]:.4f}: improvement "
            f"{gain:+.4f}{note} is not above gate.min_improvement {settings.min_improvement}"
        )
        return verdict(False, reason)
    if general_candidate is not None and general_live is not None:
        general = metric if metric in general_live else GENERAL_FALLBACK
        regression = general_live[general] - general_candidate[general]
        checks["general_regression"] = round(regression, 6)
        if settings.general_decides and regression > settings.max_general_regression:
            reason = (
                f"general set {general} fell {regression:.4f} "
                f"({general_live[general]:.4f} -> {general_candidate[general]:.4f}), more than "
                f"gate.max_general_regression {settings.max_general_regression}"
            )
            return verdict(False, reason)
    reason = f"{metric} {live[metric]:.4f} -> {candidate[metric]:.4f} ({gain:+.4f}{note})"
    return verdict(True, reason)


def lower_bound(differences: np.ndarray, confidence: float) -> float:
    """One-sided lower confidence bound of the mean of paired `differences` (normal
    approximation: mean - z * sample standard deviation / sqrt(n)); the mean when n < 2."""
    n = int(differences.size)
    mean = float(differences.mean()) if n else 0.0
    if n < 2:
        return mean
    z = NormalDist().inv_cdf(confidence)
    return mean - z * float(differences.std(ddof=1)) / math.sqrt(n)

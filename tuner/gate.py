"""The quality gate: a candidate is registered only if it measurably beats the live model.

Both models are scored on the same data: the batch's validation sessions (primary metric,
nDCG@10 by default) and, when one is configured, a fixed general query set that catches
catastrophic forgetting. The candidate passes when

    candidate[primary] - live[primary] > min_improvement                 (validation sessions)
    live_general[m] - candidate_general[m] <= max_general_regression

where m is the primary metric, or nDCG@10 when the primary metric is the sessions-only
`ips_dcg@10` (a judged collection has true labels and no clicks to weight). The decision keeps
the numbers, so a rejection says exactly by how much it missed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tuner.config import GateSettings

__all__ = ["GateDecision", "decide"]

log = logging.getLogger(__name__)
GENERAL_FALLBACK = "ndcg@10"  # the general set's metric when the primary is sessions-only


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
) -> GateDecision:
    """Apply the gate to the metrics of the candidate and the live model."""
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
    if gain <= settings.min_improvement:
        reason = (
            f"{metric} {candidate[metric]:.4f} vs live {live[metric]:.4f}: improvement "
            f"{gain:+.4f} is not above gate.min_improvement {settings.min_improvement}"
        )
        return verdict(False, reason)
    if general_candidate is not None and general_live is not None:
        general = metric if metric in general_live else GENERAL_FALLBACK
        regression = general_live[general] - general_candidate[general]
        checks["general_regression"] = round(regression, 6)
        if regression > settings.max_general_regression:
            reason = (
                f"general set {general} fell {regression:.4f} "
                f"({general_live[general]:.4f} -> {general_candidate[general]:.4f}), more than "
                f"gate.max_general_regression {settings.max_general_regression}"
            )
            return verdict(False, reason)
    reason = f"{metric} {live[metric]:.4f} -> {candidate[metric]:.4f} ({gain:+.4f})"
    return verdict(True, reason)

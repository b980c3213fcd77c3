"""The quality gate: a candidate is registered only if it measurably beats the live model.

Both models are scored on the same data: the confirm part of the validation sessions (primary
metric, `ips_dcg@10` by default) and, when one is configured, a fixed general query set that
catches catastrophic forgetting. The candidate passes when

    bound(candidate - live)[primary] > min_improvement                  (confirm part)
    live_general[m] - candidate_general[m] <= max_general_regression

where m is the primary metric, or nDCG@10 when the primary metric is the sessions-only
`ips_dcg@10` (a judged collection has true labels and no clicks to weight). With
`gate.general_decides` false the general figures are recorded and never decide. The decision
keeps the numbers, so a rejection says exactly by how much it missed.

Why a bound, and why per query. A mean over a few thousand noisy sessions moves by chance: on
homedepot-dev a third round passed at ips_dcg@10 +0.0004 and was worse on the test queries. The
sessions are not independent either: about ten share a query, and so share its documents and
both models' orders of them, so their paired differences move together; and what the candidate
must do is rank new queries better. The independent unit is the query. For `ips_dcg@10`, whose
per-session values are paired (same sessions, both models), the gate therefore averages the
paired differences per query and bounds the mean over the G queries of the confirm part:

    d_q = mean of the differences of query q's sessions            (q = 1..G)
    bound = mean(d) - t_{G-1}(confidence) * sd(d) / sqrt(G)        (one-sided, Student t)

at `gate.confidence` (0.5: the mean over queries itself). Each query counts once, as each test
query does in nDCG@10. Treating sessions as independent made the interval about sqrt(sessions
per query) times too narrow when a query's sessions agree. With fewer than
`gate.min_confirm_queries` queries the gate does not guess: the decision is "undecided", the
candidate is not registered and the live model stays.

Select / confirm. With several hyperparameter sets, the best of them on the sessions that then
bound it is biased upward (the winner's curse: with five sets that are all no better, one
clears a 90% bound far more than 10% of the time). So the validation queries are split by a
stable hash (`tuner.splits.select_confirm`, `gate.select_fraction` of them select): the search
picks its winner on the select part, and every figure the gate decides on comes from the confirm
part. With one hyperparameter set nothing is selected, so the confirm part is all validation
queries (no power is thrown away); the decision record says which.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import numpy as np

from tuner.config import GateSettings

__all__ = [
    "GateDecision",
    "Paired",
    "Verdict",
    "decide",
    "lower_bound",
    "query_means",
    "t_quantile",
]

log = logging.getLogger(__name__)
GENERAL_FALLBACK = "ndcg@10"  # the general set's metric when the primary is sessions-only
PAIRED_METRIC = "ips_dcg@10"  # the metric with per-session values (tuner.session_eval)
PAIRED_METRICS = frozenset({PAIRED_METRIC, "dr_dcg@10"})  # per session / per query values


class Verdict(StrEnum):
    """What the offline stage says (module doc: the two stages)."""

    promote = "promote"  # strong evidence of a gain: may go live without an online test
    online = "online"  # not worse by more than the margin: registered, the online test decides
    reject = "reject"
    undecided = "undecided"  # too little data to judge; the live model stays


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be registered, why, and the numbers it was judged on.

    `checks` holds the record: the confidence level, the queries and sessions of the confirm
    and select parts, the improvement, its per-query mean and lower bound."""

    passed: bool
    reason: str
    candidate: dict[str, float]
    live: dict[str, float]
    general_candidate: dict[str, float] | None = None
    general_live: dict[str, float] | None = None
    checks: dict[str, float] = field(default_factory=dict)
    undecided: bool = False  # too few confirm queries to judge; the live model stays
    verdict: Verdict = Verdict.reject


@dataclass(frozen=True)
class Paired:
    """Both models' per-session ips_dcg@10 on the confirm part, with each session's query key,
    and the size of the select part the winner was picked on (0: nothing was selected)."""

    candidate: np.ndarray  # (n_sessions,)
    live: np.ndarray  # (n_sessions,)
    queries: Sequence[str]  # (n_sessions,) query key of each session
    select_queries: int = 0
    select_sessions: int = 0

    @property
    def confirm_queries(self) -> int:
        return len(set(self.queries))


def decide(
    settings: GateSettings,
    candidate: dict[str, float],
    live: dict[str, float],
    general_candidate: dict[str, float] | None = None,
    general_live: dict[str, float] | None = None,
    paired: Paired | None = None,
    online: bool = False,
) -> GateDecision:
    """Apply the gate to the candidate's and the live model's metrics on the confirm part;
    `paired` holds their per-query (or per-session) values there, which the bounds read.
    `online`: an online test follows a registration (module doc: the two stages)."""
    metric = settings.primary_metric
    checks: dict[str, float] = {"confidence": settings.confidence}
    if online:
        checks["promote_confidence"] = settings.promote_confidence
    record = _record(settings, paired, online) if paired is not None else ""
    if paired is not None:
        checks.update(_sizes(paired))

    def verdict(kind: Verdict, reason: str) -> GateDecision:
        return GateDecision(
            kind in (Verdict.promote, Verdict.online),
            reason + record,
            candidate,
            live,
            general_candidate,
            general_live,
            dict(checks),
            kind is Verdict.undecided,
            kind,
        )

    if not settings.enabled:
        return verdict(Verdict.promote, "gate disabled (tuner.gate.enabled = false)")
    if paired is not None and paired.confirm_queries < settings.min_confirm_queries:
        reason = (
            f"undecided: {paired.confirm_queries} queries, need {settings.min_confirm_queries} "
            f"(gate.min_confirm_queries) in the confirm part; the live model stays"
        )
        return verdict(Verdict.undecided, reason)
    if not candidate or not live or metric not in candidate or metric not in live:
        reason = f"no validation data for {metric}: the gate cannot measure the candidate"
        return verdict(Verdict.reject, reason)
    gain = candidate[metric] - live[metric]
    checks["improvement"] = round(gain, 6)
    bounds = _bounds(settings, paired if metric in PAIRED_METRICS else None, gain, online)
    checks.update({k: round(v, 6) for k, v in bounds.items()})
    note = _bounds_note(settings, bounds, paired)
    summary = f"{metric} {live[metric]:.4f} -> {candidate[metric]:.4f} ({gain:+.4f}{note})"
    margin = settings.noninferiority_margin * abs(live[metric])
    if bounds["promote_bound"] > settings.min_improvement and settings.promote_directly:
        kind, why = Verdict.promote, "strong offline evidence of a gain"
    elif online and bounds["improvement_lower_bound"] > -margin:
        kind = Verdict.online
        why = (
            f"not worse than live by more than {margin:.4f} (gate.noninferiority_margin "
            f"{settings.noninferiority_margin:.0%} of live): the online test decides"
        )
    else:
        level = f" at {bounds['promote_level']:.0%}" if paired is not None else ""
        rule = f"not above gate.min_improvement {settings.min_improvement}{level}"
        if online:
            rule += f", and possibly worse than live by more than {margin:.4f} (non-inferiority)"
        shown = (
            f"{metric} {candidate[metric]:.4f} vs live {live[metric]:.4f}: improvement "
            f"{gain:+.4f}{note}"
        )
        return verdict(Verdict.reject, f"{shown}; {rule}")
    regression = _general_regression(settings, metric, general_candidate, general_live)
    if regression is not None:
        checks["general_regression"] = round(regression[0], 6)
        if settings.general_decides and regression[0] > settings.max_general_regression:
            return verdict(Verdict.reject, regression[1])
    return verdict(kind, f"{why}: {summary}")


def _bounds(
    settings: GateSettings, paired: Paired | None, gain: float, online: bool
) -> dict[str, float]:
    """The per-query mean gain and its lower bounds: at `confidence` (non-inferiority, or the
    improvement test without an online stage) and at the level a direct promotion needs."""
    level = settings.promote_confidence if online else settings.confidence
    if paired is None:
        return {"improvement_lower_bound": gain, "promote_bound": gain, "promote_level": level}
    differences = paired.candidate - paired.live
    return {
        "improvement_per_query": float(query_means(differences, paired.queries).mean()),
        "improvement_lower_bound": lower_bound(differences, settings.confidence, paired.queries),
        "promote_bound": lower_bound(differences, level, paired.queries),
        "promote_level": level,
    }


def _bounds_note(settings: GateSettings, bounds: dict[str, float], paired: Paired | None) -> str:
    if paired is None:
        return ""
    note = (
        f"; per query {bounds['improvement_per_query']:+.4f}, its "
        f"{settings.confidence:.0%} lower bound {bounds['improvement_lower_bound']:+.4f}"
    )
    if bounds["promote_level"] != settings.confidence:
        note += f", {bounds['promote_level']:.0%} bound {bounds['promote_bound']:+.4f}"
    return note + f" over {paired.confirm_queries} queries"


def _general_regression(
    settings: GateSettings,
    metric: str,
    general_candidate: dict[str, float] | None,
    general_live: dict[str, float] | None,
) -> tuple[float, str] | None:
    """How far the candidate fell on the general set, and the reason if that rejects it."""
    if general_candidate is None or general_live is None:
        return None
    general = metric if metric in general_live else GENERAL_FALLBACK
    regression = general_live[general] - general_candidate[general]
    reason = (
        f"general set {general} fell {regression:.4f} "
        f"({general_live[general]:.4f} -> {general_candidate[general]:.4f}), more than "
        f"gate.max_general_regression {settings.max_general_regression}"
    )
    return regression, reason


def _sizes(paired: Paired) -> dict[str, float]:
    return {
        "confirm_queries": paired.confirm_queries,
        "confirm_sessions": len(paired.queries),
        "select_queries": paired.select_queries,
        "select_sessions": paired.select_sessions,
    }


def _record(settings: GateSettings, paired: Paired, online: bool = False) -> str:
    """The reason's last words: the confidence levels and the data of both parts."""
    select = (
        f"select part {paired.select_queries} queries, {paired.select_sessions} sessions"
        if paired.select_queries
        else "no select part (one hyperparameter set: nothing was selected)"
    )
    levels = f"confidence {settings.confidence:.0%}"
    if online:
        levels += f", direct promotion at {settings.promote_confidence:.0%}"
    return (
        f" [{levels}; confirm part {paired.confirm_queries} "
        f"queries, {len(paired.queries)} sessions; {select}]"
    )


def query_means(differences: np.ndarray, queries: Sequence[str] | None = None) -> np.ndarray:
    """The mean of `differences` per query, in order of first appearance (None: every value is
    its own query)."""
    if queries is None:
        return np.asarray(differences, dtype=float)
    if len(queries) != differences.size:
        raise ValueError(f"{differences.size} differences but {len(queries)} query keys")
    index: dict[str, int] = {}
    cluster = np.array([index.setdefault(q, len(index)) for q in queries], dtype=np.int64)
    sums = np.bincount(cluster, weights=differences, minlength=len(index))
    return sums / np.bincount(cluster, minlength=len(index))


def lower_bound(
    differences: np.ndarray, confidence: float, queries: Sequence[str] | None = None
) -> float:
    """One-sided lower confidence bound of the mean over queries of the paired `differences`:
    mean(d) - t_{G-1}(confidence) * sd(d) / sqrt(G) over the G per-query means d (see the
    module doc); the mean when G < 2. Without `queries` each value counts as its own query,
    which is right only when the values are independent."""
    means = query_means(differences, queries)
    n = int(means.size)
    mean = float(means.mean()) if n else 0.0
    if n < 2:
        return mean
    return mean - t_quantile(confidence, n - 1) * float(means.std(ddof=1)) / math.sqrt(n)


@lru_cache(maxsize=1024)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0 < p < 1) of Student's t with `df` >= 1 degrees of freedom, by
    bisection on its closed-form distribution function (Abramowitz and Stegun 26.7.3-4)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if _t_cdf(middle, df) < p else (low, middle)
        if high - low < 1e-10:
            break
    return 0.5 * (low + high)


def _t_cdf(x: float, df: int) -> float:
    theta = math.atan(x / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:  # odd: 2/pi * (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        within = 2.0 / math.pi * (theta + math.sin(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        within = math.sin(theta) * total
    return 0.5 * (1.0 + within)

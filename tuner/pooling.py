"""Pooled relevance: all sessions of a (query, document) as one estimate, then one bounded pair.

Without pooling every session's positive is a pair weighted outcome x min(1/p(rank), clip), so
one deep purchase (5 x 10) outweighs a batch of top clicks and repeated sessions of the same
query and document are separate, noisy pairs. Here, per (q, d) (q the query key), over the
usable sessions of q that showed d, at rank r_s with outcome weight o_s (the largest outcome
weight of the actions on d in session s, 0 without one):

    rel_hat(q, d) = (sum_s o_s + a * mu) / (sum_s p(r_s) + a)
    mu            = sum over every shown hit of o / sum over every shown hit of p(r)
    w(q, d)       = min(rel_hat(q, d), max_weight)

rel_hat is an examination-weighted outcome rate (outcomes over expected examinations, the
"clicks over expected clicks" of ad click models) with a pseudo-count prior: `a`
(`pooling.prior_strength`) examinations at the round's mean rate mu. Each (q, d) with an outcome
in some session gives one pair of weight w; its hard negatives are those `train.negatives` picks
in each of those sessions (`tuner.pairs.session_negatives`; skip_above: the skip-above hits,
nearest first), in session order (never a positive of the query). The pair's query text
is that of the first session of the key.

Why this ratio rather than the mean of inverse-propensity terms (sum_s o_s / p(r_s) + a mu) /
(n + a): both estimate the outcome an examining user gives d, but the IPS mean lets one deep
outcome set the weight (5 / 0.1 = 50 for a purchase at rank 9), while the ratio divides summed
outcomes by summed exposure, so no single session contributes more than o_s / (sum_s p + a)
<= o_s / a and the estimate settles as exposure grows, without a clip. Being a ratio it is biased
on little exposure; the prior absorbs that (a thinly shown pair's rel_hat stays near mu).

Assumptions: examination is position-based (P(outcome on d at rank r) = p(r) x P(outcome | d
examined), with p the round's fitted curve) and the outcome of a click does not depend on rank;
the sessions of a query key are exchangeable (relevance does not drift within a round; one
user's repeated sessions count as independent); a shown hit without an outcome was exposed,
so sessions without any outcome still count in the denominators. Under that model rel(q, d) is
at most the largest outcome weight, the default `max_weight`: the cap only cuts estimation noise
(a few deep outcomes on little exposure) and is what `test_tuner_pooling` checks.

How evenly a batch's weights spread is its Kish effective size, (sum w)^2 / sum w^2: B for
equal weights, 1 when one pair carries the batch (`tuner.effective_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuner.config import NegativeSource, PoolingSettings, TunerSettings
from tuner.pairs import (
    PairStats,
    TrainingPair,
    build_pairs,
    outcome_weight_by_hit,
    positives_by_query_key,
    query_key,
    session_negatives,
    usable_sessions,
)
from tuner.propensity import Propensity
from tuner.sessions import Session

__all__ = ["Exposure", "PooledRelevance", "pairs_of_round", "pool_sessions", "pooled_pairs"]


@dataclass
class Exposure:
    """What the sessions of one (query, document) add up to."""

    query: str  # the text of the first session of the query key
    outcome: float = 0.0  # sum_s o_s
    examined: float = 0.0  # sum_s p(r_s)
    # hard negatives, ordered, with their loss weight (examination probability, or 1.0)
    negatives: dict[str, float] = field(default_factory=dict)

    def relevance(self, prior: float, strength: float) -> float:
        """rel_hat = (sum o + a mu) / (sum p + a)."""
        return (self.outcome + strength * prior) / (self.examined + strength)


@dataclass(frozen=True)
class PooledRelevance:
    """Every shown (query key, document)'s exposure and the round's mean outcome rate mu."""

    exposures: dict[tuple[str, str], Exposure]
    prior: float

    def relevance(self, key: str, doc_id: str, strength: float) -> float:
        return self.exposures[(key, doc_id)].relevance(self.prior, strength)


def pool_sessions(
    sessions: Sequence[Session],
    outcome_weights: Mapping[str, float],
    propensity: Propensity,
    negatives: NegativeSource = NegativeSource.skip_above,
) -> PooledRelevance:
    """Sum outcomes and examination probabilities per (query key, shown document)."""
    positives = positives_by_query_key(sessions, outcome_weights)
    exposures: dict[tuple[str, str], Exposure] = {}
    for session in sessions:
        key = query_key(session.user_query)
        outcomes = outcome_weight_by_hit(session, outcome_weights)
        seen: set[str] = set()
        for rank, doc_id in enumerate(session.hit_ids):
            if doc_id in seen:  # a repeated hit: its first showing counts (`Session.rank_of`)
                continue
            seen.add(doc_id)
            exposure = exposures.setdefault((key, doc_id), Exposure(session.user_query))
            exposure.examined += _examination(propensity, rank)
            if doc_id in outcomes:
                exposure.outcome += outcomes[doc_id]
                ids, examined = session_negatives(
                    session, rank, positives[key], negatives, propensity
                )
                for neg, weight in zip(ids, examined or (1.0,) * len(ids), strict=True):
                    exposure.negatives.setdefault(neg, weight)
    examinations = sum(e.examined for e in exposures.values())
    prior = sum(e.outcome for e in exposures.values()) / examinations if examinations else 0.0
    return PooledRelevance(exposures, prior)


def pooled_pairs(
    sessions: Sequence[Session],
    outcome_weights: Mapping[str, float],
    propensity: Propensity,
    settings: PoolingSettings,
    max_clicks_per_session: int | None = None,
    stats: PairStats | None = None,
    negatives: NegativeSource = NegativeSource.skip_above,
) -> list[TrainingPair]:
    """One pair per (query key, document) with an outcome, weighted min(rel_hat, max_weight).

    Sessions without hits and bot-like ones are left out first, as in `tuner.pairs.build_pairs`;
    `stats.pairs` counts the pooled pairs."""
    stats = stats if stats is not None else PairStats()
    usable = usable_sessions(sessions, outcome_weights, max_clicks_per_session, stats)
    stats.without_outcome += sum(1 for s in usable if not _has_shown_outcome(s, outcome_weights))
    pooled = pool_sessions(usable, outcome_weights, propensity, negatives)
    cap = weight_cap(settings, outcome_weights)
    examined = NegativeSource(negatives) is NegativeSource.skip_above_examined
    pairs = [
        TrainingPair(
            exposure.query,
            doc_id,
            min(exposure.relevance(pooled.prior, settings.prior_strength), cap),
            tuple(exposure.negatives),
            tuple(exposure.negatives.values()) if examined else (),
        )
        for (_, doc_id), exposure in pooled.exposures.items()
        if exposure.outcome > 0
    ]
    stats.pairs = len(pairs)
    return pairs


def pairs_of_round(
    sessions: Sequence[Session], settings: TunerSettings, propensity: Propensity, stats: PairStats
) -> list[TrainingPair]:
    """The round's pairs: pooled when `settings.train.pooling` is enabled, else one per
    session's positive (`tuner.pairs.build_pairs`)."""
    pooling = settings.train.pooling
    if pooling.enabled:
        return pooled_pairs(
            sessions,
            settings.outcome_weights,
            propensity,
            pooling,
            settings.max_clicks_per_session,
            stats,
            settings.train.negatives,
        )
    return build_pairs(
        sessions,
        settings.outcome_weights,
        propensity,
        settings.max_inverse_propensity,
        settings.max_clicks_per_session,
        stats,
        settings.train.negatives,
    )


def weight_cap(settings: PoolingSettings, outcome_weights: Mapping[str, float]) -> float:
    """`max_weight`, or the largest outcome weight when it is None."""
    if settings.max_weight is not None:
        return settings.max_weight
    return max((w for w in outcome_weights.values() if w > 0), default=1.0)


def _examination(propensity: Propensity, rank: int) -> float:
    p = propensity(rank)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"propensity p({rank}) = {p} must lie in (0, 1]")
    return p


def _has_shown_outcome(session: Session, outcome_weights: Mapping[str, float]) -> bool:
    hits = set(session.hit_ids)
    return any(doc_id in hits for doc_id in outcome_weight_by_hit(session, outcome_weights))

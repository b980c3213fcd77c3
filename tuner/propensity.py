"""Position bias: how likely a user is to look at the hit shown at a rank.

A click at rank 5 is stronger evidence than a click at rank 0, because few users look that far.
Positives are weighted by the clipped inverse examination propensity 1/p(k) (Joachims et al.,
"Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017). p(k) is either a configured power
law or estimated from the sessions with a position-based click model (PBM) fitted by EM:

    P(click on d at rank k for q) = theta_k * alpha_{q,d}

E-step, for a hit that was not clicked (a clicked hit was surely examined and attractive):

    P(E=1 | C=0) = theta_k (1 - alpha) / (1 - theta_k alpha)
    P(A=1 | C=0) = (1 - theta_k) alpha / (1 - theta_k alpha)

M-step: theta_k and alpha_{q,d} are the means of those posteriors (1 for clicks) over their
observations. theta is reported relative to rank 0 (theta_0 = 1). References: Chuklin, Markov and
de Rijke, "Click Models for Web Search" (2015), section 3.3; Wang et al., "Position Bias
Estimation for Unbiased Learning to Rank in Personal Search", WSDM 2018. PBM can only separate
theta from alpha when the same document is shown at several ranks for a query (rankings that
change between model versions, or result randomisation); with one fixed ranking per query the
fit stays near its power-law start.

On a few hundred sessions the EM estimate is noisy and can rise with rank (round 1 of a
cranfield demo fitted p(3) > p(2)), which would weight a deep click less than a shallower one.
Users scan a result list top-down, so the fit is projected onto non-increasing curves
(pool-adjacent-violators, each rank weighted by its observations) unless
`tuner.propensity_monotone` is off (layouts that are not scanned top-down, such as grids).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tuner.config import PropensityKind, TunerSettings
from tuner.sessions import Session

__all__ = [
    "EstimatedPropensity",
    "PowerLawPropensity",
    "Propensity",
    "clipped_inverse_propensity",
    "fit_position_based_model",
    "fit_randomized",
    "from_settings",
    "non_increasing",
    "varied_share",
]

log = logging.getLogger(__name__)

MIN_THETA = 1e-3  # keeps 1/theta finite; the inverse-propensity clip applies on top
EPS = 1e-9


class Propensity(Protocol):
    """Examination probability p(k) in (0, 1] of the hit shown at 0-based rank k."""

    def __call__(self, rank: int) -> float: ...


@dataclass(frozen=True)
class PowerLawPropensity:
    """p(k) = (1 / (k + 1)) ** eta; eta = 0 means no position bias, 1 the classic 1/rank."""

    eta: float = 1.0

    def __call__(self, rank: int) -> float:
        if rank < 0:
            raise ValueError(f"rank {rank} must be >= 0 (ranks are 0-based)")
        return float((1.0 / (rank + 1)) ** self.eta)


@dataclass(frozen=True)
class EstimatedPropensity:
    """p(k) = theta[k] as fitted (theta[0] = 1); ranks past the fit take the deepest value."""

    theta: tuple[float, ...]
    sessions: int = 0
    iterations: int = 0

    def __call__(self, rank: int) -> float:
        if rank < 0:
            raise ValueError(f"rank {rank} must be >= 0 (ranks are 0-based)")
        return self.theta[min(rank, len(self.theta) - 1)]


def clipped_inverse_propensity(propensity: Propensity, rank: int, max_ipw: float) -> float:
    """min(1 / p(rank), max_ipw): the clip keeps rare deep clicks from dominating the loss."""
    p = propensity(rank)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"propensity p({rank}) = {p} must lie in (0, 1]")
    return min(1.0 / p, max_ipw)


def fit_position_based_model(
    sessions: Sequence[Session],
    click_actions: Mapping[str, float],
    max_rank: int = 10,
    iterations: int = 200,
    tolerance: float = 1e-6,
    monotone: bool = True,
) -> EstimatedPropensity:
    """Fit PBM by EM on the top `max_rank` hits of `sessions`; a hit with any action named in
    `click_actions` (with a weight > 0) counts as clicked. `monotone`: project the fit onto
    non-increasing curves (see the module doc)."""
    ranks, pairs, clicks = _observations(sessions, click_actions, max_rank)
    if ranks.size == 0:
        raise ValueError("no shown hits in the sessions: the click model has nothing to fit")
    theta = np.array([1.0 / (k + 1) for k in range(max_rank)])
    alpha = np.full(int(pairs.max()) + 1, 0.5)
    done = 0
    while done < iterations:
        done += 1
        new_theta, alpha = _em_step(theta, alpha, ranks, pairs, clicks, max_rank)
        change = float(np.abs(new_theta - theta).max())
        theta = new_theta
        if change < tolerance:
            break
    if monotone:
        theta = non_increasing(theta, np.bincount(ranks, minlength=max_rank))
    theta = np.clip(theta / max(theta[0], EPS), MIN_THETA, 1.0)
    return EstimatedPropensity(tuple(float(t) for t in theta), len(sessions), done)


def non_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-increasing fit of `values` (pool adjacent violators):
    each run of values that rises is replaced by its weighted mean."""
    blocks: list[list[float]] = []  # [weighted sum, weight, length]
    for value, weight in zip(values, np.maximum(weights, EPS), strict=True):
        blocks.append([float(value) * float(weight), float(weight), 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, mass, length = blocks.pop()
            blocks[-1] = [blocks[-1][0] + total, blocks[-1][1] + mass, blocks[-1][2] + length]
    return np.array([total / mass for total, mass, length in blocks for _ in range(int(length))])


def _em_step(
    theta: np.ndarray,
    alpha: np.ndarray,
    ranks: np.ndarray,
    pairs: np.ndarray,
    clicks: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray]:
    t, a = theta[ranks], alpha[pairs]  # (N,) per observation
    unclicked = np.maximum(1.0 - t * a, EPS)
    examined = np.where(clicks, 1.0, t * (1.0 - a) / unclicked)
    attracted = np.where(clicks, 1.0, (1.0 - t) * a / unclicked)
    per_rank = np.maximum(np.bincount(ranks, minlength=max_rank), 1)
    per_pair = np.maximum(np.bincount(pairs, minlength=alpha.size), 1)
    new_theta = np.bincount(ranks, weights=examined, minlength=max_rank) / per_rank
    new_alpha = np.bincount(pairs, weights=attracted, minlength=alpha.size) / per_pair
    return np.clip(new_theta, EPS, 1.0), np.clip(new_alpha, EPS, 1.0 - EPS)


def _observations(
    sessions: Sequence[Session], click_actions: Mapping[str, float], max_rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank, (query, doc) index, clicked) for every hit shown in the top `max_rank`."""
    from tuner.pairs import query_key  # pairs imports this module

    pair_index: dict[tuple[str, str], int] = {}
    ranks: list[int] = []
    pairs: list[int] = []
    clicks: list[bool] = []
    for session in sessions:
        clicked = {a.object_id for a in session.actions if click_actions.get(a.action_name, 0) > 0}
        key = query_key(session.user_query)
        for rank, doc in enumerate(session.hit_ids[:max_rank]):
            ranks.append(rank)
            pairs.append(pair_index.setdefault((key, doc), len(pair_index)))
            clicks.append(doc in clicked)
    return np.array(ranks, dtype=np.int64), np.array(pairs, dtype=np.int64), np.array(clicks)


def from_settings(settings: TunerSettings, sessions: Sequence[Session] = ()) -> Propensity:
    """The propensity model the settings ask for, fitted on `sessions` when it is EM.

    EM needs data: with fewer than `propensity_min_sessions` sessions the configured power law
    is used instead, and a log line says so.
    """
    power_law = PowerLawPropensity(eta=settings.propensity_eta)
    if settings.propensity is PropensityKind.power_law:
        return power_law
    randomized = [s for s in sessions if s.randomized]
    if len(randomized) >= settings.propensity_min_randomized:
        fitted_law = fit_randomized(
            randomized, settings.outcome_weights, settings.propensity_max_rank
        )
        log.info(
            "propensity: power law eta=%.3f fitted on %d randomised sessions",
            fitted_law.eta,
            len(randomized),
        )
        return fitted_law
    if len(sessions) < settings.propensity_min_sessions:
        log.info(
            "propensity: %d sessions < propensity_min_sessions %d, using the power law eta=%s",
            len(sessions),
            settings.propensity_min_sessions,
            settings.propensity_eta,
        )
        return power_law
    varied = varied_share(sessions, settings.propensity_max_rank)
    if varied < settings.propensity_min_varied:
        log.info(
            "propensity: only %.1f%% of shown hits were ever shown at another rank for their "
            "query (< propensity_min_varied %.1f%%): EM cannot separate position from relevance, "
            "using the power law eta=%s (turn on serving.randomization to estimate it)",
            100 * varied,
            100 * settings.propensity_min_varied,
            settings.propensity_eta,
        )
        return power_law
    fitted = fit_position_based_model(
        sessions,
        settings.outcome_weights,
        settings.propensity_max_rank,
        monotone=settings.propensity_monotone,
    )
    log.info("propensity: PBM fitted by EM on %d sessions: %s", len(sessions), fitted.theta)
    return fitted


def varied_share(sessions: Sequence[Session], max_rank: int = 10) -> float:
    """The share of top-`max_rank` observations whose (query, document) pair was shown at more
    than one rank: the data PBM needs to tell position from relevance (0.0 when none)."""
    ranks, pairs, _ = _observations(sessions, {}, max_rank)
    if ranks.size == 0:
        return 0.0
    seen = np.unique(np.stack([pairs, ranks]), axis=1)[0]  # the distinct (pair, rank)s' pairs
    ranks_per_pair = np.bincount(seen, minlength=int(pairs.max()) + 1)
    return float((ranks_per_pair[pairs] > 1).mean())


ETA_GRID = np.round(np.arange(0.0, 3.0001, 0.01), 2)


def fit_randomized(
    sessions: Sequence[Session], click_actions: Mapping[str, float], max_rank: int = 10
) -> PowerLawPropensity:
    """The examination curve from sessions whose top hits were shuffled uniformly.

    Under a uniform shuffle every rank sees the same mix of documents, so the click-through rate
    at rank k is proportional to p(k) (Joachims et al., WSDM 2017, the RandTop-N intervention).
    The per-rank rates are noisy at a few hundred sessions, so a power law p(k) = (k+1)^-eta is
    fitted to them (least squares, each rank weighted by how often it was shown).
    """
    ranks, _, clicks = _observations(sessions, click_actions, max_rank)
    if ranks.size == 0:
        raise ValueError("no shown hits in the randomised sessions: nothing to fit")
    shown = np.bincount(ranks, minlength=max_rank).astype(float)
    clicked = np.bincount(ranks, weights=clicks.astype(float), minlength=max_rank)
    present = shown > 0
    ctr = np.where(present, clicked / np.maximum(shown, 1.0), 0.0)
    positions = np.arange(max_rank)[present] + 1.0
    best_eta, best_error = 1.0, float("inf")
    for eta in ETA_GRID:
        curve = positions ** (-eta)
        weights = shown[present]
        scale = float((weights * ctr[present] * curve).sum() / (weights * curve * curve).sum())
        error = float((weights * (ctr[present] - scale * curve) ** 2).sum())
        if error < best_error:
            best_eta, best_error = float(eta), error
    return PowerLawPropensity(eta=best_eta)

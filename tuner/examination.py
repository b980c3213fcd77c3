"""Cascade-aware examination for the off-policy estimate: users who may stop after a click.

Use: `cascade = examination_model(settings, sessions)` on the round's sessions, where the
propensity is fitted too (None with `gate.examination` position), then `searches, p =
cascade.as_position_based(searches, p)` before `tuner.offpolicy.estimate_clicks(searches, p,
...)` (`tuner.offline_estimate.offpolicy_scoring` does this).

Model. A user scans the page top-down; rank j is reached and examined with a chance that depends
on the rank alone, and after each click the user stops with probability s, whatever was
clicked (a dependent click model; Guo, Liu and Wang, WSDM 2009). With n_j the clicked ranks
above j, the examination propensity of the hit at rank j is (Vardasbi, de Rijke and Markov,
"Cascade Model-based Propensity Estimation for Counterfactual Learning to Rank", SIGIR 2020)

    P_j = p0(j) * (1 - s) ** n_j

where p0(j) is the examination of users who never stop after a click. Position-based users
have s = 0. Dividing each click by (1 - s) ** n_j turns cascade users into position-based ones
with curve p0, in expectation:

    E[c_j / (1 - s) ** n_j] = gamma(d) * p0(j)          for any page, d at rank j

(With R_j = 1 while the user has not stopped after a click, R_j / (1 - s) ** n_j is a
martingale of mean 1 down the page: after a click she goes on with 1 - s and is divided by
1 - s.) So the estimator of `tuner.offpolicy` stays as it is, with these reweighted clicks and
p0: its realised exposure X and the expected exposure E of the mixture policy are the
position-based ones, exactly. Not the other way round: multiplying the exposure by
(1 - s) ** n_j instead needs, for E, the attraction of every document above d (unknown), and
is biased even for X: a user who stopped still counts (1 - s) ** n_j > 0 below.

Stop probability. On one page (the same query and hits), users who clicked the top hit and
users who did not see the same documents below; the first go on with 1 - s, the second all go
on (the top hit is always examined). So, per page, P(a click below | top clicked) = (1 - s) *
P(a click below | top not clicked), and 1 - s is the Mantel-Haenszel risk ratio over the pages
shown more than once, in practice the plain pages (Greenland and Robins, "Estimation of a
Common Effect Parameter from Sparse Follow-up Data", Biometrics 1985, for its variance).
Shuffled pages rarely repeat, and pooling them across pages would compare unequal documents:
a clicked top hit of a shuffle was likely one of few good ones, leaving fewer below. s is read
on the round's sessions, as p is: the held-out log alone repeats too few pages (bench.decide:
s 0.9 and 0.5 under position-based users in two of its rounds).

Curve. The propensity given is read as the examination curve of a shuffled search's click
rates (`tuner.propensity.fit_randomized`), which under cascade users already contains the
average search's stops. By the same identity, p0(j) / p(j) = F(j), the ratio of reweighted to
raw clicks at rank j over the shuffled searches (all searches if none is shuffled), made
non-decreasing in j (more clicks lie above a deeper rank). Under position-based users s ~ 0,
so F ~ 1 and nothing changes.

Assumptions: the top hit is examined by every user (p(0) = 1); one s for every query, rank and
document (a satisfied user stops more after a good click: dbn users, `tuner.simulator`, break
this); stops for any other reason depend on the rank only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tuner.config import Examination, TunerSettings
from tuner.offpolicy_evidence import LoggedSearch, logged_searches
from tuner.propensity import Propensity, non_increasing
from tuner.sessions import Session

__all__ = [
    "MAX_STOP",
    "Cascade",
    "CascadePropensity",
    "examination_model",
    "fit_cascade",
    "stop_probability",
]

log = logging.getLogger(__name__)
MAX_STOP = 0.9  # a click below two others weighs 1 / (1 - s) ** 2: 100 clicks at 0.9


@dataclass(frozen=True)
class CascadePropensity:
    """p0(j) = min(1, p(j) * F(j)): the examination of users who never stop after a click."""

    base: Propensity
    factors: tuple[float, ...]  # F(0..): ranks past the end take the last

    def __call__(self, rank: int) -> float:
        factor = self.factors[min(rank, len(self.factors) - 1)] if self.factors else 1.0
        return min(1.0, self.base(rank) * factor)


@dataclass(frozen=True)
class Cascade:
    """A fitted cascade examination (module doc): the stop probability after a click, its
    standard error, the curve factors F(j) = p0(j) / p(j), and the pages s was read from."""

    stop: float
    stop_se: float  # inf when no page told clicked and unclicked top hits apart
    factors: tuple[float, ...]
    pages: int  # pages shown with the top hit clicked in some searches and not in others

    def as_position_based(
        self, searches: Sequence[LoggedSearch], propensity: Propensity
    ) -> tuple[list[LoggedSearch], CascadePropensity]:
        """The searches and curve of position-based users that `searches` equal in expectation
        (module doc): what `tuner.offpolicy.estimate_clicks` reads in their place."""
        return self.reweighted(searches), self.propensity(propensity)

    def reweighted(self, searches: Sequence[LoggedSearch]) -> list[LoggedSearch]:
        """Each outcome divided by (1 - s) ** (clicked ranks above it)."""
        return [replace(s, outcomes=self._outcomes(s)) for s in searches]

    def _outcomes(self, search: LoggedSearch) -> dict[str, float]:
        outcomes, above = {}, 0
        for doc in dict.fromkeys(search.shown):
            weight = search.outcomes.get(doc, 0.0)
            if weight > 0:
                outcomes[doc] = weight / (1.0 - self.stop) ** above
                above += 1
        return outcomes

    def propensity(self, base: Propensity) -> CascadePropensity:
        return CascadePropensity(base, self.factors)


def examination_model(settings: TunerSettings, sessions: Sequence[Session]) -> Cascade | None:
    """The cascade examination `settings.gate.examination` asks for, fitted on `sessions` (the
    round's, as the propensity is); None for position-based examination or without hits."""
    if settings.gate.examination != Examination.cascade:
        return None
    # a shuffle of unknown depth still counts as a shuffle here (the depth is not read)
    known = [
        replace(s, explored_depth=s.explored_depth or len(s.hit_ids)) if s.randomized else s
        for s in sessions
    ]
    searches = logged_searches(known, settings.outcome_weights)
    return fit_cascade(searches) if searches else None


def fit_cascade(searches: Sequence[LoggedSearch]) -> Cascade:
    """The stop probability and curve factors of `searches` (module doc), logged."""
    stop, se, pages = stop_probability(searches)
    factors = _curve_factors(searches, stop)
    log.info(
        "examination: cascade, stop probability after a click %.3f (standard error %.3f) from "
        "%d pages; p0/p at rank 9: %.2f",
        stop,
        se,
        pages,
        factors[min(9, len(factors) - 1)] if factors else 1.0,
    )
    return Cascade(stop, se, factors, pages)


def stop_probability(searches: Sequence[LoggedSearch]) -> tuple[float, float, int]:
    """(s, its standard error, pages used): 1 - the Mantel-Haenszel risk ratio of a click
    below the top hit, top clicked against not, per page (module doc), clipped to
    [0, MAX_STOP]; (0, inf, 0) when no page was shown both ways."""
    tables: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    for search in searches:
        hits = tuple(dict.fromkeys(search.shown))
        if len(hits) < 2:
            continue
        clicked = [search.outcomes.get(d, 0.0) > 0 for d in hits]
        top, below = int(clicked[0]), any(clicked[1:])
        table = tables.setdefault((search.query, hits), np.zeros((2, 2)))  # (top, below)
        table[top, int(below)] += 1
    both = [t for t in tables.values() if t[0].sum() > 0 and t[1].sum() > 0]
    if not both:
        return 0.0, math.inf, 0
    cells = np.array(both)  # (pages, top, below)
    n_top, n_not = cells[:, 1].sum(axis=1), cells[:, 0].sum(axis=1)  # (pages,)
    a, b, n = cells[:, 1, 1], cells[:, 0, 1], n_top + n_not  # clicks below: top / not clicked
    numerator, denominator = float((a * n_not / n).sum()), float((b * n_top / n).sum())
    if numerator == 0 or denominator == 0:
        return (0.0 if denominator == 0 else MAX_STOP), math.inf, len(both)
    ratio = numerator / denominator
    log_variance = float(((n_top * n_not * (a + b) - a * b * n) / n**2).sum())
    log_variance /= numerator * denominator
    stop = min(max(1.0 - ratio, 0.0), MAX_STOP)
    return stop, ratio * math.sqrt(max(log_variance, 0.0)), len(both)


def _curve_factors(searches: Sequence[LoggedSearch], stop: float) -> tuple[float, ...]:
    """F(j): reweighted over raw clicks at rank j in the shuffled searches (all without any),
    non-decreasing in j, each rank weighted by its clicks."""
    pool = [s for s in searches if s.depth is not None] or list(searches)
    ranks = max((len(s.shown) for s in pool), default=0)
    raw, reweighted = np.zeros(ranks), np.zeros(ranks)
    for search in pool:
        above = 0
        for rank, doc in enumerate(dict.fromkeys(search.shown)):
            if search.outcomes.get(doc, 0.0) > 0:
                raw[rank] += 1.0
                reweighted[rank] += (1.0 - stop) ** -above
                above += 1
    ratio = np.divide(reweighted, raw, out=np.ones(ranks), where=raw > 0)
    return tuple(float(f) for f in -non_increasing(-ratio, raw))

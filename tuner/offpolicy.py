"""Off-policy value of any ranking from the live model's click log, below-the-page gains included.

Use: `estimates = estimate_clicks(logged_searches(sessions, weights), propensity, policy,
live_pages)`, then `compare_rankings(estimates, candidate, live)`: per query, both rankings'
estimated DCG@10 and their paired difference (the unit for query-clustered bounds). The log's
searches, the logging policy and the evidence C, X, E below are read in tuner.offpolicy_evidence.

Target. The attraction-weighted DCG@10 of a ranking pi, averaged over the logged queries:

    V(pi) = mean over q of  sum over r < 10 of  gamma(q, pi_q[r]) / log2(r + 2)

where gamma(q, d) = E[outcome weight of d | d examined] (click 1, add_to_cart 3, purchase 5).

Logging policy (serving/rollout/randomize.py, `LoggingPolicy`). A search shows k hits. With
probability 1 - f it is plain: the live model's top k in its order. With probability f it is
randomised: the live top `depth` are shuffled uniformly and the first k shown, so each sits at each
rank j < k with probability 1/depth. A user examines rank j with probability p(j) and acts on an
examined d with expected weight gamma(q, d). The expected examination of d in a search s of q,
over the policy's coin and shuffle (d at live rank l; k = k_s hits shown):

    e_s(d) = (1 - f) * p(l) * [l < k]  +  f * [l < depth] * (1 / depth) * sum over j < k of p(j)

Estimator. The searches of q are split into two folds (alternately, in log order). C_f(d) sums
the outcome weights of d over fold f, X_f(d) the p(rank) of the searches of f that showed d,
E_f(d) the e_s(d) of all searches of f. For every d shown for q or in its live top depth:

    gamma_f(d)   = (C_f(d) + a * m(q, d)) / (X_f(d) + a)        direct model fitted on fold f
    gamma_hat(d) = sum over f of [C_f(d) + gamma_{1-f}(d) * (E_f(d) - X_f(d))] / (E_0 + E_1)(d)

and any other d gets m(q, d) alone. `Estimator.IPS` drops the control variate: C / E. Since
E[C_f] = gamma E_f, E[X_f] = E_f, and gamma_{1-f} depends on the other fold only, both are
unbiased for every d with E > 0, whatever m is (Dudik et al. 2011). E sums the exposure over
all the query's searches and both policies (the balance heuristic, Veach and Guibas 1995;
Agarwal et al. 2019): a document at live rank 12 is weighted by 1 / (its chance of being
examined under the mixture), the "policy-aware" estimator of Oosterhuis and de Rijke (SIGIR
2020). No search's weight can explode, so nothing is clipped (a clip would bias). The control
variate removes the variance of how often and where d was shown (a fifth to a third of a
paired difference's, tests); cross-fitting keeps it unbiased. m defaults to the outcome weight
per examination pooled over all queries by live rank, 0 below the explored depth (nothing is
credited for what no user could see); a `direct` (q, d) -> gamma replaces it.

Cascade examination (`gate.examination` cascade, tuner/examination.py). Users who may stop
after a click (probability s) see a document below clicked ones less than its rank says:

    P(d at rank j examined) = p0(j) * (1 - s) ** n_j          n_j: clicked ranks above j

(Vardasbi et al., SIGIR 2020), s and p0 from the log. An outcome divided by (1 - s) ** n_j is,
in expectation, a position-based user's with curve p0 (a martingale), so with those outcomes
and p0 for p, C, X and E keep their form and unbiasedness, E exactly (no guess at the clicks
above d). s ~ 0 under position-based users, and nothing changes.

Self-normalisation. `policy=None` weights each search by its own realised policy (Swaminathan
and Joachims 2015): no f or live ranking needed, less variance, but a query no shuffle reached
credits nothing for its deep documents (E = 0: three quarters of a true gain seen at 8 searches
per query, a tenth at 2); C / X fails the same way. So the gate passes the policy.

Assumptions (each breaks the unbiasedness when violated):
- Examination by rank (Joachims et al., WSDM 2017), or by rank and clicks above (cascade);
  acting on d depends on d only. Cascade users read by rank alone, and trust bias (clicks on
  unattractive top hits, not in gamma), inflate documents shown high, which favours the live
  ranking. Errors in p(j) scale gamma_hat with them.
- f, depth and k as logged: one depth for the log, depth >= k.
- The live ranking is deterministic per query within the log (plain searches of q all show
  the same page, and every shuffle of q drew from the same top depth).
- Rankings rank the documents they can be scored on; only their top 10 counts.
- V weighs queries equally; `PairedEstimate.sessions` allows weighting by traffic.

References: Joachims, Swaminathan and Schnabel, "Unbiased Learning-to-Rank with Biased
Feedback", WSDM 2017; Agarwal, Zaitsev, Wang, Li, Najork and Joachims, "Estimating Position Bias
without Intrusive Interventions", WSDM 2019; Dudik, Langford and Li, "Doubly Robust Policy
Evaluation and Learning", ICML 2011; Swaminathan and Joachims, "The Self-Normalized Estimator
for Counterfactual Learning", NeurIPS 2015; Oosterhuis and de Rijke, "Policy-Aware Unbiased
Learning to Rank for Top-k Rankings", SIGIR 2020; Vardasbi, de Rijke and Markov, "Cascade
Model-based Propensity Estimation for Counterfactual Learning to Rank", SIGIR 2020; Veach and
Guibas, "Optimally Combining Sampling Techniques for Monte Carlo Rendering", SIGGRAPH 1995.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tuner.offpolicy_evidence import LoggedSearch, LoggingPolicy, QueryEvidence, collect_evidence
from tuner.propensity import Propensity

__all__ = [
    "CUTOFF",
    "ClickEstimates",
    "Direct",
    "Estimator",
    "PairedEstimate",
    "compare_rankings",
    "estimate_clicks",
]

CUTOFF = 10  # DCG@10
Direct = Callable[[str, str], float]  # (query key, doc id) -> prior gamma


class Estimator(StrEnum):
    """How gamma_hat is formed from the log (module doc)."""

    IPS = "ips"  # gamma_hat = C / E
    DOUBLY_ROBUST = "doubly_robust"  # cross-fitted control variate (module doc)


@dataclass(frozen=True)
class ClickEstimates:
    """gamma_hat(q, d) per logged query for every document its searches could show; any other
    document is worth the direct term (0 without a `direct` model).

    `values(rankings)` is the estimated DCG@cutoff of a ranking per query, in `queries` order."""

    gammas: Mapping[str, Mapping[str, float]]
    searches: Mapping[str, int]
    direct: Direct | None = None

    @property
    def queries(self) -> tuple[str, ...]:
        return tuple(self.gammas)

    def gamma(self, query: str, doc: str) -> float:
        found = self.gammas[query].get(doc)
        if found is not None:
            return found
        return self.direct(query, doc) if self.direct is not None else 0.0

    def values(self, rankings: Mapping[str, Sequence[str]], cutoff: int = CUTOFF) -> np.ndarray:
        """Estimated DCG@cutoff of `rankings[q]` for each logged query q."""
        if cutoff < 1:
            raise ValueError(f"cutoff {cutoff} must be >= 1 (the DCG depth)")
        discount = 1.0 / np.log2(np.arange(cutoff) + 2.0)
        values = np.zeros(len(self.gammas))
        for i, query in enumerate(self.gammas):
            top = _top(rankings, query, cutoff)
            gains = np.array([self.gamma(query, d) for d in top])
            values[i] = float(gains @ discount[: len(top)])
        return values


def _top(rankings: Mapping[str, Sequence[str]], query: str, cutoff: int) -> Sequence[str]:
    if query not in rankings:
        raise ValueError(
            f"no ranking for logged query {query!r}: every logged query needs one (an empty "
            "ranking is allowed and is worth 0)"
        )
    top = rankings[query][:cutoff]
    if len(set(top)) < len(top):
        raise ValueError(f"the ranking for query {query!r} lists a document twice: {list(top)}")
    return top


def estimate_clicks(
    searches: Sequence[LoggedSearch],
    propensity: Propensity,
    policy: LoggingPolicy | None,
    live_pages: Mapping[str, Sequence[str]] | None = None,
    estimator: Estimator = Estimator.DOUBLY_ROBUST,
    direct: Direct | None = None,
    shrinkage: float = 1.0,
) -> ClickEstimates:
    """gamma_hat per query and shown document from the log (module doc). `policy` and
    `live_pages` as in `collect_evidence`; `direct`: the prior gamma of a (query, doc), also
    what a never-shown document is worth (None: the weight per examination pooled over the log
    by live rank, 0 outside the explored depth); `shrinkage`: the prior's weight a, in
    examinations."""
    if not shrinkage > 0:
        raise ValueError(f"shrinkage {shrinkage} must be > 0 (the prior's weight in examinations)")
    evidence = collect_evidence(searches, propensity, policy, live_pages)
    by_rank = _rank_calibration(evidence.values())
    gammas = {}
    for query, found in evidence.items():
        if direct is not None:
            prior = np.array([direct(query, d) for d in found.docs])
        else:
            prior = np.where(found.live_ranks >= 0, by_rank[found.live_ranks], 0.0)
        values = _gamma_hat(found, prior, estimator, shrinkage)
        gammas[query] = dict(zip(found.docs, values, strict=True))
    return ClickEstimates(gammas, {q: e.searches for q, e in evidence.items()}, direct)


def _rank_calibration(evidence: Iterable[QueryEvidence]) -> np.ndarray:
    """Outcome weight per examination of the documents at each live rank, pooled over all
    queries: the default direct model (one query's own clicks move it by O(1 / queries))."""
    found = list(evidence)
    size = max([int(e.live_ranks.max(initial=-1)) + 1 for e in found])
    clicks, examined = np.zeros(size + 1), np.zeros(size + 1)
    for e in found:  # unknown ranks (-1) land in the last slot, which is never read
        np.add.at(clicks, e.live_ranks, e.clicks.sum(axis=0))
        np.add.at(examined, e.live_ranks, e.examined.sum(axis=0))
    return np.divide(clicks, examined, out=np.zeros_like(clicks), where=examined > 0)


def _gamma_hat(
    found: QueryEvidence, prior: np.ndarray, estimator: Estimator, shrinkage: float
) -> list[float]:
    numerator = found.clicks.sum(axis=0)  # (n_docs,)
    if estimator is Estimator.DOUBLY_ROBUST:
        fitted = (found.clicks + shrinkage * prior) / (found.examined + shrinkage)  # (FOLDS, n)
        # each fold's control variate uses the direct model fitted on the other fold
        numerator = numerator + (fitted[::-1] * (found.expected - found.examined)).sum(axis=0)
    expected = found.expected.sum(axis=0)  # 0 only where the policy could never show d
    safe = np.where(expected > 0, expected, 1.0)
    return [float(v) for v in np.where(expected > 0, numerator / safe, prior)]


@dataclass(frozen=True)
class PairedEstimate:
    """Per logged query (same order everywhere): the estimated DCG@10 of the candidate and of
    the live ranking, their difference, and the number of searches behind each query."""

    queries: tuple[str, ...]
    candidate: np.ndarray  # (n_queries,)
    live: np.ndarray  # (n_queries,)
    sessions: np.ndarray  # (n_queries,) searches logged per query

    @property
    def difference(self) -> np.ndarray:
        return self.candidate - self.live

    @property
    def mean_difference(self) -> float:
        return float(self.difference.mean())

    @property
    def candidate_value(self) -> float:
        return float(self.candidate.mean())

    @property
    def live_value(self) -> float:
        return float(self.live.mean())


def compare_rankings(
    estimates: ClickEstimates,
    candidate: Mapping[str, Sequence[str]],
    live: Mapping[str, Sequence[str]],
    cutoff: int = CUTOFF,
) -> PairedEstimate:
    """Per-query estimated DCG@cutoff of `candidate` and `live` (rankings by query key, best
    first) on the same click estimates, so equal rankings differ by exactly 0."""
    return PairedEstimate(
        queries=estimates.queries,
        candidate=estimates.values(candidate, cutoff),
        live=estimates.values(live, cutoff),
        sessions=np.array([estimates.searches[q] for q in estimates.queries]),
    )

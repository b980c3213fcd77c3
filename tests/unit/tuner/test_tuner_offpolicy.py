from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytest

from tuner.offpolicy import ClickEstimates, Estimator, compare_rankings, estimate_clicks
from tuner.offpolicy_evidence import LoggedSearch, LoggingPolicy, logged_searches
from tuner.propensity import PowerLawPropensity
from tuner.session_eval import ips_dcg, session_judgments
from tuner.sessions import Action, Session

pytestmark = pytest.mark.unit

K, DEPTH, POOL = 10, 20, 30  # hits shown, shuffled live top, documents ranked per query
POLICY = LoggingPolicy(fraction=0.2, depth=DEPTH)  # the demo's serving.randomization
PROPENSITY = PowerLawPropensity(eta=1.0)
WEIGHTS = {"click": 1.0}
DISCOUNT = 1.0 / np.log2(np.arange(K) + 2.0)
BURIED_GAMMA = 0.8  # a relevant document the live model ranks 10-19


@dataclass(frozen=True)
class SyntheticLog:
    """Searches of the logging policy by position-based users with known attractiveness."""

    gamma: np.ndarray  # (queries, POOL) by live rank
    buried: np.ndarray  # (queries,) live rank of the relevant document below the page
    sessions: list[Session]

    @cached_property
    def searches(self) -> list[LoggedSearch]:
        return logged_searches(self.sessions, WEIGHTS)

    @property
    def queries(self) -> int:
        return len(self.buried)

    def live(self) -> np.ndarray:  # (queries, POOL) live ranks, best first
        return np.tile(np.arange(POOL), (self.queries, 1))

    def candidate(self) -> np.ndarray:  # (queries, K): the buried document moved to rank 2
        return np.array([[0, 1, b, *range(2, K - 1)] for b in self.buried])

    def true_value(self, order: np.ndarray) -> float:
        return float((np.take_along_axis(self.gamma, order[:, :K], axis=1) @ DISCOUNT).mean())


def _simulate(seed: int, queries: int, per_query: int, fraction: float = 0.2) -> SyntheticLog:
    rng = np.random.default_rng(seed)
    decay = 0.6 * np.exp(-np.arange(POOL) / 6.0)
    gamma = np.clip(decay + 0.15 * rng.random((queries, POOL)), 0.0, 1.0)
    buried = rng.integers(K, DEPTH, queries)
    gamma[np.arange(queries), buried] = BURIED_GAMMA
    query = np.repeat(np.arange(queries), per_query)  # (searches,)
    shuffled = rng.random(query.size) < fraction
    order = np.tile(np.arange(K), (query.size, 1))  # (searches, K) live ranks shown
    order[shuffled] = np.argsort(rng.random((int(shuffled.sum()), DEPTH)), axis=1)[:, :K]
    examined = rng.random(order.shape) < np.array([PROPENSITY(j) for j in range(K)])
    clicked = examined & (rng.random(order.shape) < gamma[query[:, None], order])
    sessions = [
        _session(i, int(query[i]), order[i], clicked[i], bool(shuffled[i]))
        for i in range(query.size)
    ]
    return SyntheticLog(gamma, buried, sessions)


def _session(i: int, query: int, order: np.ndarray, clicked: np.ndarray, shuffled: bool) -> Session:
    hits = tuple(_doc(query, r) for r in order)
    actions = tuple(Action(hits[j], "click", int(j)) for j in np.flatnonzero(clicked))
    return Session(
        f"s{i}",
        f"q{query}",
        hits,
        actions,
        randomized=shuffled,
        explored_depth=DEPTH if shuffled else None,
    )


def _doc(query: int, live_rank: int) -> str:
    return f"q{query}:{live_rank}"


def _rankings(order: np.ndarray) -> dict[str, list[str]]:
    return {f"q{q}": [_doc(q, int(r)) for r in row] for q, row in enumerate(order)}


def _estimates(log: SyntheticLog, estimator: Estimator = Estimator.DOUBLY_ROBUST) -> ClickEstimates:
    return estimate_clicks(log.searches, PROPENSITY, POLICY, _rankings(log.live()), estimator)


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size))


@pytest.fixture(scope="module")
def big_log() -> SyntheticLog:
    return _simulate(seed=0, queries=400, per_query=20)  # 8000 searches, 1600 shuffled


def test_values_of_the_live_ranking_and_of_a_candidate_lifting_a_deep_document_are_true(
    big_log: SyntheticLog,
) -> None:
    live, candidate = big_log.live(), big_log.candidate()
    paired = compare_rankings(_estimates(big_log), _rankings(candidate), _rankings(live))
    true_gain = big_log.true_value(candidate) - big_log.true_value(live)
    checks = [
        (paired.live, big_log.true_value(live)),
        (paired.candidate, big_log.true_value(candidate)),
        (paired.difference, true_gain),
    ]
    for per_query, truth in checks:
        # three standard errors of the per-query values: the query-clustered uncertainty
        assert abs(per_query.mean() - truth) < 3 * _standard_error(per_query)
    assert _standard_error(paired.difference) < 0.2 * true_gain  # tight enough to mean something


def test_the_shown_only_estimator_misses_a_gain_below_the_page_and_this_one_sees_it(
    big_log: SyntheticLog,
) -> None:
    live, candidate = big_log.live(), big_log.candidate()
    true_gain = big_log.true_value(candidate) - big_log.true_value(live)
    judged = session_judgments(big_log.sessions, WEIGHTS, PROPENSITY, max_ipw=1e9)
    shown_only = ips_dcg(judged.outcomes, _scorer(candidate)) - ips_dcg(
        judged.outcomes, _scorer(live)
    )
    paired = compare_rankings(_estimates(big_log), _rankings(candidate), _rankings(live))
    assert true_gain > 0.2
    assert shown_only < 0.35 * true_gain  # credited only where a shuffle happened to show it
    assert abs(paired.mean_difference - true_gain) < 3 * _standard_error(paired.difference)


def _scorer(order: np.ndarray) -> Callable[[str, str], float]:
    position = {d: -float(i) for docs in _rankings(order).values() for i, d in enumerate(docs)}
    return lambda query, doc: position.get(doc, -100.0 - float(doc.split(":")[1]))


def test_doubly_robust_has_less_variance_than_ips_and_neither_is_biased() -> None:
    errors = []  # per seed: (IPS, DR) error of the estimated gain
    for seed in range(30):
        log = _simulate(seed, queries=60, per_query=20)
        live, candidate = _rankings(log.live()), _rankings(log.candidate())
        true_gain = log.true_value(log.candidate()) - log.true_value(log.live())
        errors.append(
            [
                compare_rankings(_estimates(log, kind), candidate, live).mean_difference - true_gain
                for kind in (Estimator.IPS, Estimator.DOUBLY_ROBUST)
            ]
        )
    error = np.array(errors)  # (seeds, 2)
    assert np.all(np.abs(error.mean(axis=0)) < 3 * error.std(axis=0, ddof=1) / np.sqrt(30))
    assert error[:, 1].var() < 0.9 * error[:, 0].var()


def test_equal_rankings_differ_by_exactly_zero_per_query() -> None:
    log = _simulate(seed=3, queries=50, per_query=5)
    estimates = _estimates(log)
    candidate = _rankings(log.candidate())
    paired = compare_rankings(estimates, candidate, candidate)
    assert np.all(paired.difference == 0.0)
    assert paired.candidate_value > 0.0  # the values themselves are not trivially 0
    assert len(paired.queries) == 50 and np.all(paired.sessions == 5)


def test_a_document_only_a_shuffle_showed_counts_with_its_chance_under_the_mixture() -> None:
    page = [f"d{r}" for r in range(DEPTH)]
    plain = LoggedSearch("q", tuple(page[:K]), {"d0": 1.0})
    shuffled = LoggedSearch("q", ("d12", *page[1:K]), {"d12": 1.0}, depth=DEPTH)
    estimates = estimate_clicks([plain, shuffled], PROPENSITY, POLICY, {"q": page}, Estimator.IPS)
    page_exam = sum(PROPENSITY(j) for j in range(K))
    shuffle_exam = POLICY.fraction * page_exam / DEPTH  # examined d12 per search, expected
    assert estimates.gamma("q", "d12") == pytest.approx(1.0 / (2 * shuffle_exam))
    top_exam = (1 - POLICY.fraction) * PROPENSITY(0) + shuffle_exam
    assert estimates.gamma("q", "d0") == pytest.approx(1.0 / (2 * top_exam))


def test_with_few_searches_per_query_only_the_policy_mixture_credits_a_deep_gain() -> None:
    # two searches per query: most queries were never shuffled, so weighting each search by
    # its own (realised) policy leaves their deep documents unidentified, credited 0
    log = _simulate(seed=1, queries=600, per_query=2)
    live, candidate = _rankings(log.live()), _rankings(log.candidate())
    true_gain = log.true_value(log.candidate()) - log.true_value(log.live())
    mixture = compare_rankings(_estimates(log), candidate, live)
    realised = compare_rankings(estimate_clicks(log.searches, PROPENSITY, None), candidate, live)
    assert abs(mixture.mean_difference - true_gain) < 3 * _standard_error(mixture.difference)
    assert realised.mean_difference < 0.3 * true_gain


def test_logged_searches_keep_the_largest_outcome_of_each_shown_hit() -> None:
    actions = (
        Action("a", "click", 0),
        Action("a", "purchase", 0),
        Action("c", "click", 2),
        Action("z", "click", None),  # not among the hits shown: ignored
        Action("b", "hover", 1),  # no outcome weight
    )
    sessions = [
        Session(
            "s1", "  Cordless DRILL ", ("a", "b", "c"), actions, randomized=True, explored_depth=20
        ),
        Session("s2", "drill", ("a", "b")),
        Session("s3", "drill", ()),  # showed nothing: no evidence
    ]
    searches = logged_searches(sessions, {"click": 1.0, "purchase": 5.0})
    assert searches == [
        LoggedSearch("cordless drill", ("a", "b", "c"), {"a": 5.0, "c": 1.0}, depth=20),
        LoggedSearch("drill", ("a", "b"), {}, depth=None),
    ]


def test_documents_no_search_could_show_are_worth_the_direct_model_alone() -> None:
    page = [f"d{r}" for r in range(DEPTH)]
    searches = [LoggedSearch("q", tuple(page[:K]), {"d0": 1.0})]
    default = estimate_clicks(searches, PROPENSITY, POLICY, {"q": page})
    direct = estimate_clicks(searches, PROPENSITY, POLICY, {"q": page}, direct=lambda q, d: 0.25)
    assert default.gamma("q", "elsewhere") == 0.0  # nothing credited for what no one could see
    assert direct.gamma("q", "elsewhere") == 0.25
    assert direct.gamma("q", "d15") == pytest.approx(0.25)  # explored, never shown: prior only
    assert default.gamma("q", "d0") > 0.0


PAGE = tuple(f"d{r}" for r in range(K))
PLAIN = LoggedSearch("q", PAGE, {"d0": 1.0})


def _zero_at_rank_3(rank: int) -> float:
    return 0.0 if rank == 3 else 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: estimate_clicks([], PROPENSITY, POLICY), "no logged searches"),
        (
            lambda: estimate_clicks([PLAIN], _zero_at_rank_3, POLICY),
            r"propensity p\(3\) = 0.0 must lie in \(0, 1\]",
        ),
        (
            lambda: estimate_clicks(
                [PLAIN, LoggedSearch("q", PAGE, {}, depth=5)], PROPENSITY, None
            ),
            "query 'q': explored depth 5 < 10 hits shown",
        ),
        (
            lambda: estimate_clicks([PLAIN], PROPENSITY, LoggingPolicy(0.2, depth=5)),
            "query 'q': explored depth 5 < 10 hits shown",
        ),
        (
            lambda: estimate_clicks([LoggedSearch("q", PAGE, {}, depth=30)], PROPENSITY, POLICY),
            "randomised at depth 30 but the logging policy's depth is 20",
        ),
        (
            lambda: estimate_clicks(
                [LoggedSearch("q", PAGE, {}, depth=10), LoggedSearch("q", PAGE, {}, depth=20)],
                PROPENSITY,
                None,
            ),
            r"query 'q' was randomised at depths \[10, 20\]",
        ),
        (
            lambda: estimate_clicks(
                [PLAIN, LoggedSearch("q", PAGE, {}, depth=20)], PROPENSITY, LoggingPolicy(0.0, 20)
            ),
            "has a randomised search but the logging policy's randomised fraction is 0.0",
        ),
        (
            lambda: estimate_clicks([LoggedSearch("q", PAGE, {}, depth=20)], PROPENSITY, POLICY),
            "query 'q' has no plain search and no live page was given",
        ),
        (
            lambda: estimate_clicks([PLAIN, LoggedSearch("q", PAGE[::-1], {})], PROPENSITY, POLICY),
            "must be deterministic per query",
        ),
        (
            lambda: estimate_clicks([PLAIN], PROPENSITY, POLICY, shrinkage=0.0),
            "shrinkage 0.0 must be > 0",
        ),
        (lambda: LoggingPolicy(fraction=1.5, depth=20), r"fraction 1.5 must lie in \[0, 1\]"),
        (lambda: LoggingPolicy(fraction=0.2, depth=0), "explored depth 0 must be >= 1"),
        (
            lambda: logged_searches([Session("s9", "q", PAGE, randomized=True)], WEIGHTS),
            "session 's9' is randomised but its explored depth is unknown",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_value_and_the_rule(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ({}, "no ranking for logged query 'q'"),
        ({"q": ["d1", "d2", "d1"]}, "the ranking for query 'q' lists a document twice"),
    ],
)
def test_rankings_must_cover_every_logged_query_once_per_document(
    candidate: dict[str, list[str]], message: str
) -> None:
    estimates = estimate_clicks([PLAIN], PROPENSITY, POLICY)
    with pytest.raises(ValueError, match=message):
        compare_rankings(estimates, candidate, {"q": list(PAGE)})
    with pytest.raises(ValueError, match="cutoff 0 must be >= 1"):
        compare_rankings(estimates, {"q": list(PAGE)}, {"q": list(PAGE)}, cutoff=0)


def test_an_explored_document_no_search_showed_is_worth_the_rate_of_its_live_rank() -> None:
    # unbiasedness of the control variate needs the same direct term for every explored
    # document, shown or not: here the rank-15 rate pooled over queries, 1 click in 1 look
    pages = {q: [f"{q}{r}" for r in range(DEPTH)] for q in ("a", "b")}
    searches = [
        LoggedSearch("a", tuple(pages["a"][:K]), {}),
        LoggedSearch("a", ("a15", *pages["a"][1:K]), {"a15": 1.0}, depth=DEPTH),
        LoggedSearch("b", tuple(pages["b"][:K]), {}),
    ]
    estimates = estimate_clicks(searches, PROPENSITY, POLICY, pages)
    assert estimates.gamma("b", "b15") == pytest.approx(1.0)
    assert estimates.gamma("b", "b25") == 0.0  # below the explored depth: no evidence at all


def test_without_randomisation_documents_below_the_page_get_the_direct_term_only() -> None:
    page = [f"d{r}" for r in range(DEPTH)]
    off = LoggingPolicy(fraction=0.0, depth=DEPTH)
    for kind in Estimator:
        estimates = estimate_clicks([PLAIN], PROPENSITY, off, {"q": page}, kind, lambda q, d: 0.1)
        assert estimates.gamma("q", "d15") == pytest.approx(0.1)  # no chance to be shown
        assert estimates.gamma("q", "d0") == pytest.approx(1.0)  # 1 click in 1 look

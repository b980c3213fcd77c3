"""The gate's dr_dcg@10: the live model's own log, each model's ranking of each query's pool,
and a candidate's gain below the page, which ips_dcg@10 cannot see."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.config import GateSettings
from tuner.gate import Paired, Verdict, decide
from tuner.offline_estimate import DR_DCG, offpolicy_log, offpolicy_scoring, rank_pools
from tuner.propensity import PowerLawPropensity
from tuner.session_eval import Scorer, session_judgments
from tuner.sessions import Action, Session

pytestmark = pytest.mark.unit

WEIGHTS = {"click": 1.0}
PROPENSITY = PowerLawPropensity(eta=1.0)
QUERIES, DOCS, DEPTH, SHOWN = 40, 20, 20, 10
GOOD = 12  # the live model ranks this document 13th; users love it


def doc(query: int, rank: int) -> str:
    return f"q{query}-d{rank}"


def simulated_log(seed: int = 0, searches: int = 20, shuffled: float = 0.2) -> list[Session]:
    """The live model (document i of a query at rank i) logged with the demo's policy: a fifth
    of the searches show 10 of the top 20 shuffled; position-based users."""
    rng = np.random.default_rng(seed)
    attraction = np.full(DOCS, 0.1)
    attraction[GOOD] = 0.9
    sessions = []
    for q in range(QUERIES):
        for s in range(searches):
            randomized = bool(rng.random() < shuffled)
            order = rng.permutation(DEPTH)[:SHOWN] if randomized else np.arange(SHOWN)
            actions = tuple(
                Action(doc(q, int(d)), "click", j)
                for j, d in enumerate(order)
                if rng.random() < PROPENSITY(j) * attraction[d]
            )
            sessions.append(
                Session(
                    f"s{q}-{s}",
                    f"query {q}",
                    tuple(doc(q, int(d)) for d in order),
                    actions,
                    randomized=randomized,
                    explored_depth=DEPTH if randomized else None,
                    model_version="v1",
                    arm="production",
                )
            )
    return sessions


def embedder(first: int | None = None):  # type: ignore[no-untyped-def]
    """An `Embed` whose cosine ranks each query's documents by rank (the live model), or with
    document `first` on top (a candidate that found what users love)."""
    size = QUERIES * DOCS

    def vector(text: str) -> np.ndarray:
        v = np.zeros(size)
        if text.startswith("query "):
            q = int(text.split()[1])
            scores = -np.arange(DOCS, dtype=float)
            if first is not None:
                scores[first] = 1.0
            v[q * DOCS : (q + 1) * DOCS] = scores
        else:
            q, d = (int(part[1:]) for part in text.split("-"))
            v[q * DOCS + d] = 1.0
        return v

    return lambda texts: np.stack([vector(t) for t in texts])


TEXTS = {doc(q, d): doc(q, d) for q in range(QUERIES) for d in range(DOCS)}


def test_a_candidate_lifting_a_document_below_the_page_gains_in_dr_dcg_only() -> None:
    sessions = simulated_log()
    log = offpolicy_log(sessions, "v1", WEIGHTS)
    assert log is not None and log.policy.depth == DEPTH
    assert 0.1 < log.policy.fraction < 0.3
    scoring = offpolicy_scoring(log, embedder(), TEXTS, PROPENSITY)
    judgments = session_judgments(sessions, WEIGHTS, PROPENSITY)
    score = Scorer(judgments, TEXTS, embedder=lambda model: model, offpolicy=scoring)
    live, candidate = score(embedder()), score(embedder(first=GOOD))
    dr_gain = candidate.validation[DR_DCG] - live.validation[DR_DCG]
    ips_gain = candidate.validation["ips_dcg@10"] - live.validation["ips_dcg@10"]
    # truth: the good document at rank 0 instead of outside the top 10
    assert dr_gain > 0.5
    assert dr_gain > 3 * ips_gain
    assert candidate.per_query is not None and candidate.per_query.size == QUERIES
    assert candidate.per_query_keys == tuple(log.queries)


def test_the_log_keeps_only_the_live_models_own_searches_and_says_why() -> None:
    own = simulated_log(searches=4)
    interleaved = [Session("i1", "query 0", (doc(0, 3),), arm="interleave")]
    older = [Session("o1", "query 0", (doc(0, 1),), model_version="v0")]
    deeper = [
        Session(
            "x1", "query 0", (doc(0, 2),), randomized=True, explored_depth=50, model_version="v1"
        )
    ]
    moved = [Session(f"m{i}", "query 999", (f"m{i}",), model_version="v1") for i in range(2)]
    log = offpolicy_log([*own, *interleaved, *older, *deeper, *moved], "v1", WEIGHTS)
    assert log is not None and len(log.searches) == len(own)
    assert log.left_out == {
        "interleave searches (another policy)": 1,
        "searches of an earlier model": 1,
        "shuffles of another depth": 1,
        "searches of queries whose plain pages disagree": 2,
    }
    assert offpolicy_log(interleaved, "v1", WEIGHTS) is None


def test_each_model_ranks_each_querys_pool_by_its_own_scores() -> None:
    log = offpolicy_log(simulated_log(searches=10), "v1", WEIGHTS)
    assert log is not None
    live = rank_pools(embedder(), log, TEXTS)
    candidate = rank_pools(embedder(first=GOOD), log, TEXTS)
    for key, pool in log.pools.items():
        assert sorted(live[key]) == sorted(pool)
        assert live[key] == sorted(pool, key=lambda d: int(d.split("-d")[1]))
        if doc(int(key.split()[1]), GOOD) in pool:
            assert candidate[key][0] == doc(int(key.split()[1]), GOOD)


def _paired(differences: np.ndarray, level: float = 1.0) -> Paired:
    queries = [f"q{i}" for i in range(differences.size)]
    return Paired(level + differences, np.full(differences.size, level), queries)


@pytest.mark.parametrize(
    ("shift", "online", "verdict"),
    [
        (0.30, True, Verdict.promote),  # strong evidence: live without the online test
        (0.0, True, Verdict.online),  # not worse: the online test decides
        (-0.005, True, Verdict.online),  # within the non-inferiority margin
        (-0.30, True, Verdict.reject),  # clearly worse
        (0.0, False, Verdict.reject),  # no online stage: the gain must be shown offline
        (0.30, False, Verdict.promote),
    ],
)
def test_the_offline_verdict_of_two_stages(shift: float, online: bool, verdict: Verdict) -> None:
    rng = np.random.default_rng(3)
    differences = shift + rng.normal(0.0, 0.1, 200)
    paired = _paired(differences)
    candidate = {DR_DCG: float(paired.candidate.mean())}
    live = {DR_DCG: float(paired.live.mean())}
    decision = decide(GateSettings(), candidate, live, paired=paired, online=online)
    assert decision.verdict is verdict, decision.reason
    assert decision.passed is (verdict in (Verdict.promote, Verdict.online))
    assert "confidence 90%" in decision.reason
    if online:
        assert "direct promotion at 99%" in decision.reason

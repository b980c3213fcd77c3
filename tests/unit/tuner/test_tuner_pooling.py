"""Pooled relevance: one bounded pair per (query, document) from all of its sessions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.tuner.tuner_fakes import session
from tuner.config import PoolingSettings, TrainSettings, TunerSettings
from tuner.effective_batch import EffectiveBatches, kish
from tuner.pairs import PairStats, TrainingPair, build_pairs
from tuner.pooling import pairs_of_round, pool_sessions, pooled_pairs
from tuner.propensity import PowerLawPropensity

WEIGHTS = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
P = PowerLawPropensity(eta=1.0)  # p(0) = 1, p(1) = 1/2, p(2) = 1/3, ...
ON = PoolingSettings(enabled=True)


def three_searches_for_a_drill() -> list:  # type: ignore[type-arg]
    return [
        session("drill", ["a", "b", "c"], ("c", "click"), query_id="1"),
        session("Drill", ["c", "a", "b"], query_id="2"),  # shown first, not clicked
        session("drill ", ["b", "c", "a"], ("c", "purchase"), query_id="3"),
    ]


def test_sessions_of_a_query_and_document_pool_into_one_pair_by_the_formula() -> None:
    stats = PairStats()
    [pair] = pooled_pairs(three_searches_for_a_drill(), WEIGHTS, P, ON, stats=stats)
    examined = 1 / 3 + 1 + 1 / 2  # c at ranks 2, 0, 1; so are a and b
    prior = (1 + 5) / (3 * examined)  # mu: every shown hit's outcomes over its examinations
    expected = (1 + 5 + 1.0 * prior) / (examined + 1.0)  # (sum o + a mu) / (sum p + a)
    assert pair == TrainingPair("drill", "c", pytest.approx(expected), ("b", "a"))
    assert expected == pytest.approx(2.5027, abs=1e-4)
    assert (stats.sessions, stats.without_outcome, stats.pairs) == (3, 1, 1)
    per_session = build_pairs(three_searches_for_a_drill(), WEIGHTS, P, 10.0)
    assert sorted(p.weight for p in per_session) == [3.0, 10.0]  # before: 1 x 3 and 5 x 2


def test_a_thinly_shown_deep_purchase_is_shrunk_toward_the_prior() -> None:
    hits = [f"d{k}" for k in range(10)]
    sessions = [session("saw", hits, ("d0", "click"), query_id=str(i)) for i in range(20)]
    sessions.append(session("saw", hits, ("d9", "purchase"), query_id="deep"))
    pooled = {p.positive_id: p.weight for p in pooled_pairs(sessions, WEIGHTS, P, ON)}
    per_session = {p.positive_id: p.weight for p in build_pairs(sessions, WEIGHTS, P, 10.0)}
    assert per_session["d9"] == 50.0  # 5 x min(1 / 0.1, 10): more than the 20 top clicks
    prior = 25 / (21 * sum(1 / (k + 1) for k in range(10)))
    assert pooled["d0"] == pytest.approx((20 + prior) / (21 + 1))
    assert pooled["d9"] == pytest.approx((5 + prior) / (21 * 0.1 + 1))  # ~1.74
    stronger = PoolingSettings(enabled=True, prior_strength=10.0)
    assert {p.positive_id: p.weight for p in pooled_pairs(sessions, WEIGHTS, P, stronger)}[
        "d9"
    ] < pooled["d9"]


def test_the_cap_binds_where_a_few_deep_outcomes_would_exceed_it() -> None:
    hits = [f"d{k}" for k in range(10)]
    sessions = [session("saw", hits, ("d9", "purchase"), query_id=str(i)) for i in range(3)]
    pooled = pool_sessions(sessions, WEIGHTS, P)
    assert pooled.relevance("saw", "d9", 1.0) > 10.0  # 15 outcomes over 0.3 + 1 examinations
    [pair] = pooled_pairs(sessions, WEIGHTS, P, ON)
    assert pair.weight == 5.0  # the largest outcome weight: a document every examiner buys
    capped = PoolingSettings(enabled=True, max_weight=2.0)
    assert [p.weight for p in pooled_pairs(sessions, WEIGHTS, P, capped)] == [2.0]


def test_a_positive_of_the_query_is_never_a_negative_and_bots_are_left_out() -> None:
    first = session("drill", ["a", "b", "c"], ("c", "click"), query_id="1")
    second = session("drill", ["b", "a"], ("a", "click"), query_id="2")
    bot = session("drill", ["x", "y"], *[("y", "click")] * 30, query_id="bot")
    stats = PairStats()
    pairs = {
        p.positive_id: p for p in pooled_pairs([first, second, bot], WEIGHTS, P, ON, 20, stats)
    }
    assert set(pairs) == {"a", "c"} and stats.bot_like == 1
    assert pairs["c"].hard_negative_ids == ("b",) and pairs["a"].hard_negative_ids == ("b",)


def test_the_round_pools_only_when_the_setting_is_on() -> None:
    sessions = three_searches_for_a_drill()
    off = TunerSettings()
    assert off.train.pooling.enabled is False  # the default until pooling is measured better
    assert pairs_of_round(sessions, off, P, PairStats()) == build_pairs(
        sessions, WEIGHTS, P, off.max_inverse_propensity, off.max_clicks_per_session
    )
    on = TunerSettings(train=TrainSettings(pooling=ON))
    assert pairs_of_round(sessions, on, P, PairStats()) == pooled_pairs(sessions, WEIGHTS, P, ON)


ACTIONS = st.sampled_from(["click", "add_to_cart", "purchase", "hover"])
SESSIONS = st.lists(
    st.tuples(
        st.sampled_from(["drill", "saw", "Drill"]),
        st.lists(st.sampled_from([f"d{k}" for k in range(12)]), min_size=1, max_size=30),
        st.lists(st.tuples(st.integers(0, 29), ACTIONS), max_size=6),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    SESSIONS,
    st.floats(0.0, 2.5),
    st.floats(0.01, 20.0),
    st.one_of(st.none(), st.floats(0.1, 100.0)),
)
def test_no_pooled_weight_exceeds_its_bound(raw, eta, strength, max_weight) -> None:  # type: ignore[no-untyped-def]
    sessions = [
        session(q, hits, *[(hits[i % len(hits)], a) for i, a in acts], query_id=str(n))
        for n, (q, hits, acts) in enumerate(raw)
    ]
    pooling = PoolingSettings(enabled=True, prior_strength=strength, max_weight=max_weight)
    cap = max_weight if max_weight is not None else 5.0
    pairs = pooled_pairs(sessions, WEIGHTS, PowerLawPropensity(eta), pooling)
    assert all(0.0 < p.weight <= cap for p in pairs)
    assert len({(p.query.casefold().strip(), p.positive_id) for p in pairs}) == len(pairs)


def test_kish_effective_batch_size() -> None:
    assert kish([1.0] * 32) == pytest.approx(32.0)
    assert kish([50.0] + [1.0] * 31) == pytest.approx(81**2 / 2531)  # one deep purchase: ~2.6
    assert kish([]) == 0.0 and kish([0.0, 0.0]) == 0.0
    effective = EffectiveBatches()
    batches = [[TrainingPair("q", "a", 1.0), TrainingPair("q", "b", 1.0)]] * 3
    assert list(effective.track(batches)) == batches
    assert effective.sizes == [2.0, 2.0, 2.0] and effective.mean() == 2.0

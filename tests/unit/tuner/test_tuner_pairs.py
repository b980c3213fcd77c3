from __future__ import annotations

import pytest

from tests.unit.tuner.tuner_fakes import session
from tuner.pairs import PairStats, TrainingPair, build_pairs
from tuner.propensity import PowerLawPropensity

WEIGHTS = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
P = PowerLawPropensity(eta=1.0)


def pairs_of(sessions, max_ipw: float = 10.0, max_clicks: int | None = None):  # type: ignore[no-untyped-def]
    return build_pairs(sessions, WEIGHTS, P, max_ipw, max_clicks)


def test_click_at_top_has_outcome_weight_and_no_negatives() -> None:
    pairs = pairs_of([session("drill", ["a", "b"], ("a", "click"))])
    assert pairs == [TrainingPair("drill", "a", 1.0, ())]


def test_weight_is_max_outcome_times_inverse_propensity() -> None:
    s = session("drill", ["a", "b", "c"], ("c", "click"), ("c", "purchase"), ("c", "add_to_cart"))
    [pair] = pairs_of([s])
    assert pair.weight == pytest.approx(5.0 * 3.0)  # purchase, shown at rank 2: 1/p = 3


def test_deep_clicks_are_clipped() -> None:
    hits = [f"d{i}" for i in range(30)]
    [pair] = pairs_of([session("q", hits, ("d29", "click"))], max_ipw=4.0)
    assert pair.weight == pytest.approx(4.0)


def test_unknown_actions_are_ignored() -> None:
    s = session("drill", ["a", "b"], ("a", "hover"), ("b", "click"))
    [pair] = pairs_of([s])
    assert pair.positive_id == "b"
    assert pair.hard_negative_ids == ("a",)  # a hover is no outcome: a is a skipped hit


def test_skip_above_negatives_nearest_first_and_none_below() -> None:
    s = session("drill", ["a", "b", "c", "d", "e"], ("d", "click"))
    [pair] = pairs_of([s])
    assert pair.hard_negative_ids == ("c", "b", "a")


def test_a_positive_anywhere_for_the_query_is_never_a_negative() -> None:
    first = session("Cordless  Drill", ["a", "b", "c"], ("c", "click"), query_id="1")
    second = session("cordless drill", ["b", "a"], ("a", "click"), query_id="2")
    pairs = pairs_of([first, second])
    by_positive = {p.positive_id: p for p in pairs}
    assert by_positive["c"].hard_negative_ids == ("b",)  # a was clicked in the other session
    assert by_positive["a"].hard_negative_ids == ("b",)


def test_a_positive_for_another_query_can_be_a_negative() -> None:
    first = session("drill", ["a", "b"], ("b", "click"), query_id="1")
    second = session("saw", ["a", "b"], ("a", "click"), query_id="2")
    drill = next(p for p in pairs_of([first, second]) if p.query == "drill")
    assert drill.hard_negative_ids == ("a",)


def test_each_clicked_hit_gives_one_pair() -> None:
    s = session("drill", ["a", "b", "c"], ("a", "click"), ("c", "click"), ("a", "click"))
    pairs = pairs_of([s])
    assert sorted(p.positive_id for p in pairs) == ["a", "c"]
    assert next(p for p in pairs if p.positive_id == "c").hard_negative_ids == ("b",)


def test_sessions_without_hits_and_bots_give_no_pairs() -> None:
    empty = session("nothing", [], query_id="1")
    bot = session("drill", ["a", "b", "c"], *[(h, "click") for h in "abc"], query_id="2")
    quiet = session("saw", ["a"], query_id="3")
    stats = PairStats()
    pairs = build_pairs([empty, bot, quiet], WEIGHTS, P, 10.0, 2, stats)
    assert pairs == []
    assert (stats.sessions, stats.without_hits, stats.bot_like, stats.without_outcome) == (
        3,
        1,
        1,
        1,
    )


def test_the_rank_is_the_shown_position_whatever_the_event_ordinal_says() -> None:
    """The shown hit list is the one rank source (tuner.ordinals only cross-checks ordinals):
    a click on a hit the list lacks gives no pair, whatever ordinal its event carries."""
    from tuner.sessions import Action, Session

    shown = Session("1", "drill", ("a", "b", "c"), (Action("c", "click", 7),))
    [pair] = pairs_of([shown])
    assert (pair.weight, pair.hard_negative_ids) == (pytest.approx(3.0), ("b", "a"))
    unshown = Session("2", "drill", ("a", "b"), (Action("z", "click", 3),))
    assert pairs_of([unshown]) == []

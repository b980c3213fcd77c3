from __future__ import annotations

import json
from collections import Counter

import pytest

from tuner.simulator import ClickModel, ClickSimulator, UserModel, query_record

QRELS = {"q": {"best": 3, "meh": 1}}
HITS = ["junk", "meh", "best", "other"]


def _clicks_by_rank(sim: ClickSimulator, sessions: int, hits: list[str] = HITS) -> Counter[int]:
    counts: Counter[int] = Counter()
    for i in range(sessions):
        for event in sim.events(f"id{i}", "q", hits, client_id="c"):
            if event["action_name"] == "click":
                counts[event["event_attributes"]["position"]["ordinal"]] += 1
    return counts


def test_click_rates_follow_examination_times_attraction() -> None:
    user = UserModel(eta=1.0, noise=0.05)
    counts = _clicks_by_rank(ClickSimulator(QRELS, user, seed=3), 20_000)
    expected = {
        rank: user.examination(rank) * user.attraction(QRELS["q"].get(doc, 0), 3)
        for rank, doc in enumerate(HITS)
    }
    for rank, p in expected.items():
        assert counts[rank] / 20_000 == pytest.approx(p, abs=0.012), rank


def test_position_bias_makes_the_same_hit_clicked_less_when_lower() -> None:
    top = _clicks_by_rank(ClickSimulator({"q": {"junk": 3}}, seed=1), 5000)[0]
    low = _clicks_by_rank(ClickSimulator({"q": {"other": 3}}, seed=1), 5000)[3]
    assert low < top / 2.5


def test_purchases_only_follow_carts_on_top_grade_hits() -> None:
    sim = ClickSimulator(QRELS, UserModel(cart_prob=1.0, purchase_prob=1.0, eta=0.0), seed=0)
    actions = Counter()
    for i in range(500):
        for event in sim.events(f"id{i}", "q", HITS, client_id="c"):
            actions[(event["action_name"], event["event_attributes"]["object"]["object_id"])] += 1
    assert (
        actions[("purchase", "best")]
        == actions[("add_to_cart", "best")]
        == actions[("click", "best")]
    )
    assert not any(name != "click" for name, doc in actions if doc != "best")


def test_cascade_users_never_click_below_a_skipped_examination() -> None:
    sim = ClickSimulator(QRELS, UserModel(click_model=ClickModel.cascade, cascade_stop=1.0), seed=2)
    for i in range(2000):
        clicks = [
            e for e in sim.events(f"id{i}", "q", HITS, client_id="c") if e["action_name"] == "click"
        ]
        assert len(clicks) <= 1  # stops after the first click


def test_records_are_ubi_shaped_with_stable_event_ids() -> None:
    sim = ClickSimulator(QRELS, UserModel(eta=0.0, noise=1.0), seed=0)
    first = sim.events("qid-1", "q", HITS, client_id="c1", session_id="s1")
    again = ClickSimulator(QRELS, UserModel(eta=0.0, noise=1.0), seed=0).events(
        "qid-1", "q", HITS, client_id="c1", session_id="s1"
    )
    assert [e["event_attributes"]["event_id"] for e in first] == [
        e["event_attributes"]["event_id"] for e in again
    ]
    event = first[0]
    assert event["query_id"] == "qid-1" and event["client_id"] == "c1"
    assert event["event_attributes"]["object"]["object_id"] == "junk"
    assert event["timestamp"].endswith("Z")
    record = query_record(
        "qid-1", "text", HITS, client_id="c1", at=__import__("datetime").datetime.now()
    )
    assert record["query_response_hit_ids"] == HITS


DBN_QRELS = {"q": {"top": 3, "a": 1, "b": 1, "c": 1}}
DBN_HITS = ["top", "a", "b", "c"]


def _dbn_click_rates(user: UserModel, grades: dict[str, int], top_grade: int) -> list[float]:
    """P(click at rank k) under dbn: P(E_0) = 1, P(E_k+1) = P(E_k) (1 - a_k s_k) gamma."""
    examined, rates = 1.0, []
    for rank, doc in enumerate(DBN_HITS):
        a = user.attraction(grades.get(doc, 0), top_grade, rank)
        rates.append(examined * a)
        examined *= (1 - a * user.satisfaction(grades.get(doc, 0), top_grade)) * user.dbn_continue
    return rates


def test_dbn_click_rates_follow_attraction_satisfaction_and_continuation() -> None:
    user = UserModel(click_model=ClickModel.dbn, dbn_continue=0.9, dbn_satisfaction=0.8)
    counts = _clicks_by_rank(ClickSimulator(DBN_QRELS, user, seed=4), 20_000, DBN_HITS)
    expected = _dbn_click_rates(user, DBN_QRELS["q"], 3)
    for rank, p in enumerate(expected):
        assert counts[rank] / 20_000 == pytest.approx(p, abs=0.012), rank


def _clicks_below_a_top_click(user: UserModel, seed: int, sessions: int = 10_000) -> float:
    """Clicks at ranks 1-3 per session whose rank-0 top-grade hit was clicked."""
    sim = ClickSimulator(DBN_QRELS, user, seed=seed)
    clicked_top = below = 0
    for i in range(sessions):
        ranks = [
            e["event_attributes"]["position"]["ordinal"]
            for e in sim.events(f"id{i}", "q", DBN_HITS, client_id="c")
            if e["action_name"] == "click"
        ]
        if 0 in ranks:
            clicked_top += 1
            below += len(ranks) - 1
    return below / clicked_top


def test_a_satisfying_dbn_click_stops_the_scan_where_other_users_go_on() -> None:
    """The top-grade hit at rank 0 satisfies 80% of the dbn users who click it, so the hits below
    it are clicked far less after it than by position-based users, or by dbn users who are never
    satisfied (the same continuation gamma)."""
    dbn = UserModel(click_model=ClickModel.dbn, dbn_continue=0.9, dbn_satisfaction=0.8)
    unsatisfied = UserModel(click_model=ClickModel.dbn, dbn_continue=0.9, dbn_satisfaction=0.0)
    position = UserModel(eta=0.0)  # examines every rank, as dbn users who are never satisfied
    after_dbn = _clicks_below_a_top_click(dbn, seed=5)
    # a = 0.05 + 0.95/7 = 0.186 per rank below; gamma: 0.9 + 0.81 + 0.73 examined (unsatisfied)
    assert after_dbn == pytest.approx(0.2 * 0.186 * (0.9 + 0.81 + 0.729), abs=0.02)
    assert after_dbn < _clicks_below_a_top_click(unsatisfied, seed=6) / 3
    assert after_dbn < _clicks_below_a_top_click(position, seed=7) / 4


IRRELEVANT = {"q": {"x": 1}}  # grade 1 known, so the hits below are irrelevant, not the top grade
TEN = [f"d{i}" for i in range(10)]


@pytest.mark.parametrize("model", list(ClickModel))
def test_trust_bias_raises_false_clicks_on_the_top_rank_under_every_click_model(
    model: ClickModel,
) -> None:
    def top_rate(trust_bias: float) -> float:
        user = UserModel(click_model=model, eta=0.0, noise=0.05, trust_bias=trust_bias)
        return _clicks_by_rank(ClickSimulator(IRRELEVANT, user, seed=8), 5000, TEN)[0] / 5000

    # n_0 = 0.05 + 0.95 * 0.5 = 0.525 with trust bias 0.5, against 0.05 without
    assert top_rate(0.5) == pytest.approx(0.525, abs=0.03)
    assert top_rate(0.0) == pytest.approx(0.05, abs=0.015)


def test_trust_bias_false_clicks_decay_with_rank_as_the_formula_says() -> None:
    user = UserModel(eta=0.0, noise=0.05, trust_bias=0.6)
    counts = _clicks_by_rank(ClickSimulator(IRRELEVANT, user, seed=9), 20_000, TEN)
    rates = [counts[k] / 20_000 for k in range(10)]
    for rank, rate in enumerate(rates):
        assert rate == pytest.approx(0.05 + 0.95 * 0.6 / (rank + 1), abs=0.012), rank
    assert rates[0] > rates[1] > rates[3] > rates[9] > 0.05 + 0.02  # still above the noise


def test_trust_bias_lifts_relevant_hits_on_what_their_gain_leaves() -> None:
    user = UserModel(noise=0.05, trust_bias=0.5)
    assert user.attraction(3, 3, rank=0) == 1.0
    assert user.attraction(0, 3, rank=0) == pytest.approx(0.525)
    assert user.attraction(1, 3, rank=1) == pytest.approx(0.2875 + (1 - 0.2875) / 7)
    assert user.attraction(1, 3) == UserModel(noise=0.05).attraction(1, 3, rank=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"click_model": "pbm"}, "click model 'pbm' is not one of position, cascade, dbn"),
        ({"eta": -0.5}, "eta -0.5 must be a finite number >= 0"),
        ({"noise": 1.5}, "noise 1.5 must be a probability in [0, 1]"),
        ({"noise": -0.1}, "noise -0.1 must be a probability in [0, 1]"),
        ({"trust_bias": 2.0}, "trust_bias 2.0 must be a probability in [0, 1]"),
        ({"dbn_continue": 1.1}, "dbn_continue 1.1 must be a probability in [0, 1]"),
        ({"shown": 0}, "shown 0 must be >= 1"),
    ],
)
def test_a_user_model_outside_its_rules_is_refused_naming_value_and_rule(
    changes: dict, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        UserModel(**changes)
    assert message in str(caught.value)


def test_a_click_model_given_by_name_is_the_enum_and_the_config_is_plain_json() -> None:
    user = UserModel(click_model="dbn", trust_bias=0.2)  # type: ignore[arg-type]
    assert user.click_model is ClickModel.dbn
    assert json.loads(json.dumps(user.config())) == user.config()
    assert user.config()["click_model"] == "dbn" and user.config()["trust_bias"] == 0.2

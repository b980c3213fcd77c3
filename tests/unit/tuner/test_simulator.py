from __future__ import annotations

from collections import Counter

import pytest

from tuner.simulator import ClickModel, ClickSimulator, UserModel, query_record

QRELS = {"q": {"best": 3, "meh": 1}}
HITS = ["junk", "meh", "best", "other"]


def _clicks_by_rank(sim: ClickSimulator, sessions: int) -> Counter[int]:
    counts: Counter[int] = Counter()
    for i in range(sessions):
        for event in sim.events(f"id{i}", "q", HITS, client_id="c"):
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

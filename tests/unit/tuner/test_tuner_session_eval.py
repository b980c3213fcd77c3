from __future__ import annotations

import numpy as np
import pytest

from tests.unit.tuner.tuner_fakes import actions_of
from tuner.propensity import PowerLawPropensity
from tuner.session_eval import SessionOutcomes, evaluate_sessions, ips_dcg, session_judgments
from tuner.sessions import Action, Session
from tuner.simulator import ClickSimulator, UserModel

WEIGHTS = {"click": 1.0, "purchase": 5.0}


def _session(sid: str, clicks: list[tuple[str, int]]) -> Session:
    hits = ("a", "b", "c", "d", "e")
    actions = tuple(Action(doc, "click", rank) for doc, rank in clicks)
    return Session(sid, "cordless drill", hits, actions)


def test_raw_gains_count_a_click_the_same_wherever_it_was_shown() -> None:
    judged = session_judgments([_session("s1", [("a", 0), ("e", 4)])], WEIGHTS)
    assert judged.qrels["cordless drill"] == {"a": 1, "e": 1}


def test_propensity_corrected_gains_favour_hits_found_despite_a_low_rank() -> None:
    # p(k) = 1/(k+1): a click at rank 4 is five times the evidence of one at rank 0.
    sessions = [_session("s1", [("a", 0), ("e", 4)])]
    judged = session_judgments(sessions, WEIGHTS, PowerLawPropensity(eta=1.0), max_ipw=10.0)
    assert judged.qrels["cordless drill"] == {"a": 1, "e": 5}
    clipped = session_judgments(sessions, WEIGHTS, PowerLawPropensity(eta=1.0), max_ipw=3.0)
    assert clipped.qrels["cordless drill"]["e"] == 3


def test_a_model_that_pulls_other_queries_documents_above_the_clicked_one_scores_lower() -> None:
    """With `pool`, each query is ranked against every document shown in validation: a model
    that ranks the drill query's clicked hit below a saw blade shown for another query
    loses, although both models order the drill query's own hits the same way."""
    sessions = [
        Session("s1", "cordless drill", ("drill", "bit"), (Action("drill", "click", 0),)),
        Session("s2", "circular saw", ("saw", "blade"), (Action("saw", "click", 0),)),
    ]
    judged = session_judgments(sessions, WEIGHTS)
    texts = {d: d for d in ("drill", "bit", "saw", "blade")}
    faithful = {"cordless drill": [1, 0], "circular saw": [0, 1], "drill": [0.9, 0.1],
                "bit": [0.5, 0.5], "saw": [0.1, 0.9], "blade": [0.2, 0.8]}  # fmt: skip
    overfit = {**faithful, "blade": [0.95, 0.05]}  # the blade now outranks the drill for drills

    def embedder(vectors: dict[str, list[float]]):  # type: ignore[no-untyped-def]
        def embed(items):  # type: ignore[no-untyped-def]
            rows = np.array([vectors[t] for t in items], dtype=np.float32)
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

        return embed

    good = evaluate_sessions(embedder(faithful), judged, texts, "pool")
    bad = evaluate_sessions(embedder(overfit), judged, texts, "pool")
    assert good["mrr@10"] == 1.0 and bad["mrr@10"] == 0.75  # the drill query's hit fell to rank 2
    # ranking only each query's own shown hits cannot tell the two apart
    assert evaluate_sessions(embedder(overfit), judged, texts)["mrr@10"] == 1.0


def test_ips_dcg_weights_each_outcome_by_its_inverse_propensity_and_the_models_rank() -> None:
    outcomes = [SessionOutcomes("q", ("a", "b", "c"), {"c": 3.0})]
    rank_c_first = {"c": 3, "a": 2, "b": 1}
    assert ips_dcg(outcomes, lambda q, d: rank_c_first[d]) == 3.0
    assert ips_dcg(outcomes, lambda q, d: -"abc".index(d)) == 3.0 / np.log2(4)


def test_ips_dcg_sees_the_better_order_that_click_labels_hide() -> None:
    """The live order shows a top-grade document at rank 6, where few users look; a model that
    lifts it to the top is better by the true judgments, and ips_dcg@10, computed from the live
    order's clicks alone, comes out near each order's attraction-weighted DCG, which it
    estimates without bias."""
    grades = {"d0": 1, "d1": 1, "d2": 0, "d3": 0, "d4": 0, "d5": 0, "d6": 3, "d7": 0}
    live_order = tuple(grades)
    user = UserModel(eta=1.0, noise=0.05)
    simulator = ClickSimulator({"q": grades}, user, seed=11)
    sessions = []
    for i in range(4000):
        events = simulator.events(f"s{i}", "q", live_order, client_id="c")
        actions = actions_of(events)
        sessions.append(Session(f"s{i}", "q", live_order, actions))
    judged = session_judgments(sessions, {"click": 1.0}, PowerLawPropensity(eta=1.0), max_ipw=10.0)
    better = ("d6", "d0", "d1", "d2", "d3", "d4", "d5", "d7")
    texts = {d: d for d in grades}

    def embed_in(order: tuple[str, ...]):  # type: ignore[no-untyped-def]
        def embed(batch):  # type: ignore[no-untyped-def]
            rows = [[1.0, 0.0] if t == "q" else [len(order) - order.index(t), 1.0] for t in batch]
            return np.array(rows, dtype=np.float32)

        return embed

    live = evaluate_sessions(embed_in(live_order), judged, texts)
    lifted = evaluate_sessions(embed_in(better), judged, texts)
    assert lifted["ips_dcg@10"] > live["ips_dcg@10"] * 1.3
    for order, metrics in ((live_order, live), (better, lifted)):
        expected = sum(user.attraction(grades[d], 3) / np.log2(r + 2) for r, d in enumerate(order))
        assert metrics["ips_dcg@10"] == pytest.approx(expected, rel=0.1)

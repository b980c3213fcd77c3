from __future__ import annotations

import numpy as np

from tuner.propensity import PowerLawPropensity
from tuner.session_eval import evaluate_sessions, session_judgments
from tuner.sessions import Action, Session

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

from __future__ import annotations

from tuner.propensity import PowerLawPropensity
from tuner.session_eval import session_judgments
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

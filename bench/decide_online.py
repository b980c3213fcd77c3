"""bench.decide's online stage: interleaved searches until serving's sequential test decides.

Each search draws a train query uniformly, merges both models' exact top 10 (`top_lists`) by
serving's `team_draft`, lets the round's user model click the merged page, `credit`s the clicks
into an `InterleaveTally`, and runs `serving.rollout.ab_stats.decide` (the mSPRT on the win
share, default `ABSettings`) after every search, until it promotes or rolls back, or the budget
(the worker's `ab_max_queries`) is spent.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bench.decide_models import Vectors
from tuner.simulator import ClickSimulator, UserModel

__all__ = ["SHOWN", "interleave", "top_lists"]

SHOWN = 10


def top_lists(vectors: Vectors, doc_texts: dict[str, str], queries: dict[str, str]) -> dict:
    """Per query id, the model's exact top 10 document ids over the whole corpus."""
    doc_ids = sorted(doc_texts)
    ids = sorted(queries)
    scores = vectors([queries[q] for q in ids]) @ vectors([doc_texts[d] for d in doc_ids]).T
    top = np.argsort(-scores, axis=1)[:, :SHOWN]  # (queries, 10)
    return {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(ids)}


def interleave(
    live_tops: dict[str, list[str]],
    candidate_tops: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    user: UserModel,
    budget: int,
    seed: int,
    ab: Any = None,
) -> tuple[str, int]:
    """The online stage: interleaved searches until serving's sequential test decides or
    `budget` searches are spent. Returns (promote | rollback | budget, searches)."""
    from serving.config import ABSettings
    from serving.rollout.ab import Arm, Experiment
    from serving.rollout.ab_stats import ExperimentMetrics
    from serving.rollout.ab_stats import decide as ab_decide
    from serving.rollout.interleave import InterleaveTally, credit, team_draft

    ab = ab if ab is not None else ABSettings()
    arm = Arm("control", "live", "live")
    experiment = Experiment("bench", "", "interleave", 0.5, arm, Arm("candidate", "c", "c"), "")
    metrics = ExperimentMetrics(arms={}, interleave=InterleaveTally())
    simulator = ClickSimulator(qrels, user, seed=seed)
    rng = random.Random(seed)
    query_ids = sorted(live_tops)
    for searches in range(1, budget + 1):
        qid = rng.choice(query_ids)
        merged, teams = team_draft(live_tops[qid], candidate_tops[qid], SHOWN, rng)
        events = simulator.events(f"i{searches}", qid, merged, client_id="bench")
        clicked = [_ordinal(e) for e in events if e["action_name"] == "click"]
        metrics.interleave.add(credit(teams, clicked))
        action = ab_decide(experiment, metrics, ab).action
        if action != "continue":
            return action, searches
    return "budget", budget


def _ordinal(event: dict) -> int:
    return int(event["event_attributes"]["position"]["ordinal"])

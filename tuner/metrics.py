"""Ranking metrics with graded (linear) gains, computed by ranx.

`rank_metrics(qrels, run)` returns nDCG@10, MRR@10, Recall@10 and Recall@100 averaged over the
queries of `qrels`; a query with no hits in `run` counts as zero, never as missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
DEPTH_100 = 100  # the deepest cut-off of METRICS: runs need no more hits than this

Qrels = Mapping[str, Mapping[str, int]]
RunScores = Mapping[str, Mapping[str, float]]


def rank_metrics(
    qrels: Qrels, run: RunScores, metrics: tuple[str, ...] = METRICS
) -> dict[str, float]:
    """Mean metrics over the judged queries (those with at least one gain > 0)."""
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import evaluate

    judged = {q: {d: int(g) for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    judged = {q: docs for q, docs in judged.items() if docs}
    if not judged:
        raise ValueError("no query has a judgment with a gain above 0: nothing to evaluate")
    # ranx refuses empty runs; a sentinel hit that is never relevant scores the query as zero.
    padded = {q: dict(run.get(q) or {"__no_hit__": 0.0}) for q in judged}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cast warnings on first compilation
        scores = evaluate(RanxQrels(judged), RanxRun(padded), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {name: float(scores[name]) for name in metrics}

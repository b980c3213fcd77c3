"""One side of an iteration (full, or query over the frozen encoder): train, pick, gate.

Every side trains its hyperparameter sets from its own start (`tuner.start_point`) on the round's
pairs and is gated against the same live scores on the same confirm queries, so the deploy
policy (`tuner.candidate_policy`) compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.candidate_policy import GatedCandidate
from tuner.config import GateSettings, TrainSettings
from tuner.gate import GateDecision, Paired, decide
from tuner.offline_estimate import DR_DCG
from tuner.ordinals import ordinal_metrics
from tuner.search import Trainer, Trial, best_trial, run_search
from tuner.session_eval import Scorer, Scores
from tuner.splits import SelectConfirm
from tuner.start_point import StartPoint

if TYPE_CHECKING:
    from tuner.iteration import IterationContext, Notify, _Prepared

__all__ = ["Side", "closest", "paired_scores", "train_side"]


@dataclass(frozen=True)
class Side:
    """One side's trained and gated candidate (full, or query over the frozen encoder)."""

    side: str
    start: StartPoint
    trials: list[Trial]
    best: Trial
    model: Any
    decision: GateDecision

    def gated(self, side: str, method: str, live: Scores, metric: str) -> GatedCandidate:
        gain = self.best.scores.validation.get(metric, 0.0) - live.validation.get(metric, 0.0)
        return GatedCandidate(
            side,
            method,
            self.decision.passed,
            round(gain, 6),
            self.decision.verdict.value,
            self.decision.reason,
        )


def train_side(
    side: str,
    start: StartPoint,
    sets: list[TrainSettings],
    data: _Prepared,
    context: IterationContext,
    judged: tuple[GateSettings, SelectConfirm, Scorer, Scores, bool, bool],
    trainer: Trainer,
    batch_id: str,
    notify: Notify,
) -> Side:
    """Train `side`'s hyperparameter sets from `start`, pick the best, gate it against live."""
    gate, split, score, live, online, progress = judged
    common = {
        "batch_id": batch_id,
        "parent": start.parent,
        "pairs": len(data.pairs),
        "side": side,
        **ordinal_metrics(data.ordinals),
    }
    trials, best_model = run_search(
        start.model,
        data.pairs,
        data.doc_texts,
        sets,
        score,
        context.tracker,
        trainer,
        gate.primary_metric,
        common,
        progress,
    )
    best = best_trial(trials, gate.primary_metric)
    decision = decide(
        gate,
        best.scores.validation,
        live.validation,
        best.scores.general,
        live.general,
        paired=paired_scores(best.scores, live, data, split, gate.primary_metric),
        online=online,
    )
    notify(f"gate ({side}) {'passed' if decision.passed else 'rejected'}: {decision.reason}")
    if best.scores.general and live.general:
        notify(
            f"general set ({gate.general_split}): ndcg@10 live "
            f"{live.general['ndcg@10']:.4f}, {side} candidate "
            f"{best.scores.general['ndcg@10']:.4f}"
            + ("" if gate.general_decides else " (recorded only: gate.general_decides)")
        )
    return Side(side, start, trials, best, best_model, decision)


def closest(trained: dict[str, Side], gated: list[GatedCandidate]) -> Side:
    """With every side rejected: the one whose gain came closest, for the record."""
    return trained[max(gated, key=lambda g: g.gain).side]


def paired_scores(
    candidate: Scores, live: Scores, data: _Prepared, split: SelectConfirm, metric: str
) -> Paired | None:
    """Both models' values on the confirm part that `metric`'s bound reads (dr_dcg@10: per
    query; ips_dcg@10: per session), with the select part's size for the record."""
    if metric == DR_DCG and data.offpolicy is not None:
        if candidate.per_query is None or live.per_query is None:
            return None
        selected = sum(s.query in split.select for s in data.offpolicy.searches)
        return Paired(
            candidate.per_query,
            live.per_query,
            candidate.per_query_keys,
            len(split.select),
            selected,
        )
    if candidate.per_session is None or live.per_session is None:
        return None
    selected = sum(o.query in split.select for o in data.judgments.outcomes)
    return Paired(
        candidate.per_session, live.per_session, candidate.queries, len(split.select), selected
    )

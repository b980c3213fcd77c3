"""Hyperparameter sets of one iteration: each trains a copy of the start model and is scored.

Every set is an MLflow run (its parameters, validation metrics and loss curve); the set with
the best primary metric on the select part of the validation queries wins (the first one on
ties, or when nothing validates). The gate then bounds the winner on the confirm part, which
the choice never saw (`tuner.gate`); `val_` metrics are the confirm part's, `select_` ones the
select part's (absent when one set made a split pointless).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.config import TrainOverrides, TrainSettings
from tuner.pairs import TrainingPair
from tuner.session_eval import Scores
from tuner.tracking import Tracker

if TYPE_CHECKING:
    from tuner.train import TrainReport

__all__ = ["Trainer", "Trial", "best_trial", "hyperparameter_sets", "run_search"]

Trainer = Callable[..., "TrainReport"]  # fine_tune(model, pairs, doc_texts, settings, progress)


@dataclass(frozen=True)
class Trial:
    """One trained hyperparameter set and how it scored."""

    name: str
    settings: TrainSettings
    report: TrainReport
    scores: Scores
    run_id: str | None


def hyperparameter_sets(
    base: TrainSettings, search: Sequence[TrainOverrides]
) -> list[TrainSettings]:
    """`base` with each override applied; just `base` when the search is empty."""
    if not search:
        return [base]
    return [base.model_copy(update=o.model_dump(exclude_none=True)) for o in search]


def run_search(
    start: Any,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    sets: Sequence[TrainSettings],
    score: Callable[[Any], Scores],
    tracker: Tracker,
    trainer: Trainer,
    primary: str,
    common_params: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[Trial], Any]:
    """Train and score every set from a copy of `start`; returns the trials and best model."""
    trials: list[Trial] = []
    best_model: Any = None
    for index, settings in enumerate(sets):
        model = copy.deepcopy(start) if len(sets) > 1 else start
        params = {**(common_params or {}), **settings.model_dump()}
        with tracker.run(f"hp-{index}", params) as run:
            report = trainer(model, pairs, doc_texts, settings, progress=progress)
            run.log_curve("loss", report.loss_curve)
            run.log_metrics(_train_metrics(report))
            scores = score(model)
            run.log_metrics(scores.validation, prefix="val_")
            run.log_metrics(scores.selection or {}, prefix="select_")
            run.log_metrics(scores.general or {}, prefix="general_")
        trial = Trial(f"hp-{index}", settings, report, scores, run.run_id)
        if best_model is None or _better(trial, trials, primary):
            best_model = model
        trials.append(trial)
    return trials, best_model


def best_trial(trials: Sequence[Trial], primary: str) -> Trial:
    """The first trial with the highest primary metric on the select part."""
    return max(trials, key=lambda t: t.scores.for_selection.get(primary, float("-inf")))


def _better(trial: Trial, previous: Sequence[Trial], primary: str) -> bool:
    return best_trial([*previous, trial], primary) is trial


def _train_metrics(report: TrainReport) -> dict[str, float]:
    """Throughput, final loss and (text models) the mean Kish effective batch per step."""
    metrics = {"pairs_per_s": report.pairs_per_s, "final_loss": report.final_loss}
    if report.effective_batch is not None:
        metrics["effective_batch"] = report.effective_batch
    return metrics

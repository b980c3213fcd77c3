"""One training iteration: batch -> splits -> pairs -> fine-tune -> gate -> ONNX -> registry.

Text and CLIP models go the same way; what differs per kind (load, documents, train, embed,
export) sits behind `tuner.model_kinds.ModelKind`, picked from the start model's kind. For CLIP,
pairs train on the images of the clicked documents (`serving.index.image_field`).

The iteration trains a few hyperparameter sets from the live model on a released batch (plus a
replayed sample of earlier batches' training sessions), scores each and the live model on the
same validation sessions (this batch's held-out sessions and those of earlier batches, see
`tuner.history`), picks the best set on the select part of the validation queries and lets the
gate bound it on the confirm part (`tuner.splits.select_confirm`, `tuner.gate`). A rejected
candidate ends the iteration `rejected` with the numbers; a passing one is exported, checked for
ONNX parity, given an int8 variant where it ranks like fp32 (`tuner.int8_variant`, never fatal)
and only then registered (the LocalRegistry first, then MLflow) with the alias `candidate`. A
run that fails or is killed before that point leaves no version anywhere. Moving `production`
is a separate decision.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import RegistryError
from serving.models.registry import ModelVersion
from tuner.ann_mining import NeighbourIndex, mining_index, with_mined_negatives
from tuner.batches import Batches, ReleasedBatch, SessionSource
from tuner.candidate_policy import (
    FULL,
    CandidateChoice,
    GatedCandidate,
    candidate_methods,
    choose_candidate,
)
from tuner.candidate_side import closest, train_side
from tuner.config import GateSettings, RolloutMode, TunerSettings
from tuner.errors import NoTrainingDataError
from tuner.examination import Cascade, examination_model
from tuner.gate import GateDecision
from tuner.history import round_sessions
from tuner.int8_variant import Int8Outcome, add_int8_variant
from tuner.judged import JudgedCollection
from tuner.model_kinds import TEXT, DocumentSource, ModelKind, doc_texts_for
from tuner.offline_estimate import DR_DCG, OffPolicyLog, offpolicy_log, offpolicy_scoring
from tuner.ordinals import OrdinalCheck, check_ordinals, ordinal_metrics, report_ordinals
from tuner.pairs import PairStats, TrainingPair
from tuner.pooling import pairs_of_round
from tuner.propensity import Propensity, from_settings
from tuner.publish import ModelRegistry, publish
from tuner.query_kind import embedder_for
from tuner.search import Trainer, Trial, hyperparameter_sets
from tuner.session_eval import Scorer, Scores, SessionJudgments, session_judgments
from tuner.sessions import Session
from tuner.splits import SelectConfirm, Splits, select_confirm
from tuner.start_point import StartPoint, kind_of, start_model
from tuner.tracking import Lineage, NullTracker, Tracker

if TYPE_CHECKING:
    from tuner.export import ExportReport

__all__ = [
    "DocumentSource",
    "IterationResult",
    "LearningData",
    "StartPoint",
    "collect_pairs",
    "doc_texts_for",
    "kind_of",
    "learning_data",
    "run_training_iteration",
    "start_model",
]

log = logging.getLogger(__name__)
Notify = Callable[[str], None]


@dataclass(frozen=True)
class IterationResult:
    """What one iteration did: `done` with a registered `version`, or `rejected` with why."""

    status: str  # "done" | "rejected"
    batch_id: str
    version: ModelVersion | None
    sessions: int
    replayed: int
    validation_sessions: int
    pairs: int
    pair_stats: PairStats
    start: str
    propensity: tuple[float, ...]
    decision: GateDecision
    trials: list[Trial]
    best: Trial
    live: Scores
    export: ExportReport | None = None
    int8: Int8Outcome | None = None  # None: not attempted (switched off, or a CLIP model)
    ordinals: tuple[OrdinalCheck, ...] = ()  # event ordinals against shown positions
    side: str = FULL  # the candidate registered (or, all rejected, the closest): full | query
    candidates: tuple[GatedCandidate, ...] = ()  # every side trained, gated
    choice: CandidateChoice | None = None  # which side deploys and why (tuner.candidate_policy)

    @property
    def train(self) -> Any:
        return self.best.report


@dataclass(frozen=True)
class IterationContext:
    """Where an iteration reads from and writes to (built by the composition root)."""

    source: SessionSource
    store: Batches
    registry: ModelRegistry
    documents: DocumentSource
    text_fields: list[str]
    tracker: Tracker = NullTracker()
    general: JudgedCollection | None = None
    image_field: str | None = "image"  # CLIP models train on this field's images
    task_id: str | None = None  # the worker's task: recorded in the version's metadata
    neighbours: NeighbourIndex | None = None  # the live index: train.negatives ann_mined


def run_training_iteration(
    released: ReleasedBatch,
    context: IterationContext,
    settings: TunerSettings,
    *,
    start_ref: str = "production",
    trainer: Trainer | None = None,
    notify: Notify = log.info,
    progress: bool = True,
    online: bool | None = None,
) -> IterationResult:
    """Train on `released` (+ replay), gate the best candidate, register it if it passes.

    `online`: whether an online test follows a registration (default: unless the worker's
    rollout is `promote`); with one, a candidate that is not worse offline is registered for it
    (`GateDecision.verdict` online) and strong offline evidence may promote it directly."""
    mined_in = mining_index(context.neighbours, settings.train)  # a missing index fails first
    kind = kind_of(context.registry, start_ref)
    live_version = _live_version(context.registry, start_ref)
    data = _prepare(released, context, settings, notify, kind, live_version)
    methods = candidate_methods(settings)
    starts = {
        side: start_model(context.registry, settings.train.base_model, start_ref, method)
        for side, method in methods.items()
    }
    first = next(iter(starts.values()))  # every side's live model is the same live version
    data = with_mined_negatives(data, first, context, settings.train, mined_in, notify)
    sets = hyperparameter_sets(settings.train, settings.search)
    gate = _gate_settings(settings, data, notify)
    keys = [o.query for o in data.judgments.outcomes]
    if data.offpolicy is not None:
        keys += list(data.offpolicy.queries)
    split = select_confirm(keys, gate.select_fraction, settings.batches.seed, len(sets))
    notify(
        f"start model: {first.source}; scoring it on {len(data.validation)} sessions "
        f"({len(split.select)} select, {len(split.confirm)} confirm queries)"
    )
    score = _scorer(data, context, gate, first, split, kind)
    live = score(first.live_model)
    online = settings.worker.rollout != RolloutMode.promote if online is None else online
    trained = {
        side: train_side(
            side,
            start,
            [s.model_copy(update={"method": methods[side]}) for s in sets],
            data,
            context,
            (gate, split, score, live, online, progress),
            trainer if trainer is not None and side == FULL else start.kind.train,
            released.batch.batch_id,
            notify,
        )
        for side, start in starts.items()
    }
    metric = gate.primary_metric
    gated = [t.gated(side, methods[side].value, live, metric) for side, t in trained.items()]
    choice = choose_candidate(gated, settings.worker.reindex_margin, metric)
    if len(trained) > 1:
        notify(f"deploy choice: {choice.side or 'none'}: {choice.reason}")
    chosen = trained[choice.side] if choice.side is not None else closest(trained, gated)
    decision = chosen.decision
    result = IterationResult(
        status="done" if choice.side is not None else "rejected",
        batch_id=released.batch.batch_id,
        version=None,
        sessions=len(released.sessions),
        replayed=len(data.replayed),
        validation_sessions=len(data.validation),
        pairs=len(data.pairs),
        pair_stats=data.stats,
        start=chosen.start.source,
        propensity=data.propensity_curve,
        decision=decision,
        trials=chosen.trials,
        best=chosen.best,
        live=live,
        ordinals=data.ordinals,
        side=chosen.side,
        candidates=tuple(gated),
        choice=choice,
    )
    if choice.side is None:
        return result
    exported, int8, version = _register(
        chosen.model, chosen.best, chosen.start, result, data, context, settings
    )
    notify(
        f"registered {version.version} (alias candidate), parity {exported.parity_min_cosine:.6f}"
    )
    if int8 is not None:
        notify(f"int8 variant {'kept' if int8.kept else 'dropped'}: {int8.reason}")
    return replace(result, version=version, export=exported, int8=int8)


def _gate_settings(settings: TunerSettings, data: _Prepared, notify: Notify) -> GateSettings:
    """The gate's settings for this round: `dr_dcg@10` needs the live model's own log; without
    one (no session served by the live model's policy) the round gates on `ips_dcg@10`."""
    gate = settings.gate
    if gate.primary_metric == DR_DCG and data.offpolicy is None:
        notify(
            "no held-out search served by the live model on its own policy: the gate uses "
            "ips_dcg@10 (shown hits re-ordered) instead of dr_dcg@10 this round"
        )
        return gate.model_copy(update={"primary_metric": "ips_dcg@10"})
    return gate


def _scorer(
    data: _Prepared,
    context: IterationContext,
    gate: GateSettings,
    start: StartPoint,
    split: SelectConfirm,
    kind: ModelKind = TEXT,
) -> Scorer:
    """Scores any model on this round's validation data (and the general set), the same way:
    a query model with its two sides, any other with `kind`'s embedder."""
    embedder = embedder_for(kind)
    offpolicy = None
    if data.offpolicy is not None and data.propensity is not None and gate.primary_metric == DR_DCG:
        embed = embedder(start.live_model)
        offpolicy = offpolicy_scoring(
            data.offpolicy, embed, data.doc_texts, data.propensity, data.cascade
        )
    return Scorer(
        data.judgments,
        data.doc_texts,
        context.general,
        gate.general_split,
        gate.general_max_queries,
        embedder=embedder,
        rank_against=gate.rank_against,
        select=split.select,
        offpolicy=offpolicy,
    )


def _live_version(registry: ModelRegistry, ref: str) -> str | None:
    try:
        return registry.get(ref).version
    except RegistryError:
        return None


@dataclass(frozen=True)
class _Prepared:
    splits: Splits
    replayed: list[Session]
    validation: list[Session]  # this batch's held-out sessions, then earlier batches'
    pairs: list[TrainingPair]
    stats: PairStats
    judgments: SessionJudgments
    doc_texts: dict[str, Any]  # id -> text, or PIL image for a CLIP model's image documents
    propensity_curve: tuple[float, ...]
    ordinals: tuple[OrdinalCheck, ...] = ()
    propensity: Propensity | None = None
    offpolicy: OffPolicyLog | None = None  # the live model's own held-out log (dr_dcg@10)
    cascade: Cascade | None = None  # gate.examination cascade: fitted on the round


def _prepare(
    released: ReleasedBatch,
    context: IterationContext,
    settings: TunerSettings,
    notify: Notify,
    kind: ModelKind = TEXT,
    live_version: str | None = None,
) -> _Prepared:
    sessions = round_sessions(context.store, context.source, released, settings.batches)
    splits, replayed, validation = sessions.splits, sessions.replayed, sessions.validation
    learn = learning_data([*splits.train, *replayed], validation, settings)
    pairs, stats, judgments = learn.pairs, learn.stats, learn.judgments
    curve = tuple(round(learn.propensity(k), 4) for k in range(settings.propensity_max_rank))
    offpolicy = None
    if settings.gate.primary_metric == DR_DCG:
        offpolicy = offpolicy_log(validation, live_version, settings.outcome_weights)
    doc_ids = sorted({*judgments.doc_ids, *(offpolicy.doc_ids if offpolicy else ())})
    doc_texts = doc_texts_for(
        context.documents,
        pairs,
        context.text_fields,
        doc_ids,
        kind=kind,
        image_field=context.image_field,
    )
    notify(
        f"{released.batch.batch_id}: {len(released.sessions)} sessions (+{len(replayed)} "
        f"replayed): {len(splits.train)} train, {len(splits.latest)} latest + "
        f"{len(splits.cold)} cold-query ({len(splits.cold_queries)} held-out queries) "
        f"validation (+{len(validation) - len(splits.validation)} "
        f"held out earlier); {len(pairs)} pairs; p(k) {curve[:5]}..."
    )
    return _Prepared(
        splits,
        replayed,
        validation,
        pairs,
        stats,
        judgments,
        doc_texts,
        curve,
        learn.ordinals,
        learn.propensity,
        offpolicy,
        learn.cascade,
    )


@dataclass(frozen=True)
class LearningData:
    """What a round learns from and is judged on: training pairs and validation judgments, both
    corrected with one examination curve."""

    propensity: Propensity
    pairs: list[TrainingPair]
    stats: PairStats
    judgments: SessionJudgments
    ordinals: tuple[OrdinalCheck, ...] = ()  # the events' ordinals against the shown positions
    cascade: Cascade | None = None  # gate.examination cascade: stops after a click, fitted


def learning_data(
    train: Sequence[Session], validation: Sequence[Session], settings: TunerSettings
) -> LearningData:
    """Pairs from `train` and gate judgments from `validation`, with the examination curve
    fitted on both (the shuffled searches of either tell where users look), and so is the stop
    probability after a click with `gate.examination` cascade. Ranks are the shown positions;
    the events' ordinals are only checked against them and logged."""
    propensity = from_settings(settings, [*train, *validation])
    pairs, stats = collect_pairs(train, settings, propensity)
    judgments = session_judgments(
        validation, settings.outcome_weights, propensity, settings.max_inverse_propensity
    )
    ordinals = tuple(check_ordinals([*train, *validation]))
    report_ordinals(ordinals)
    cascade = examination_model(settings, [*train, *validation])
    return LearningData(propensity, pairs, stats, judgments, ordinals, cascade)


def _register(
    model: Any,
    best: Trial,
    start: StartPoint,
    result: IterationResult,
    data: _Prepared,
    context: IterationContext,
    settings: TunerSettings,
) -> tuple[ExportReport, Int8Outcome | None, ModelVersion]:
    """Export, check parity, add int8 if it holds, then register: LocalRegistry, its
    `candidate` alias, MLflow."""
    metrics = _metrics(best, result)
    if context.task_id is not None:  # a resumed task adopts only a version naming it
        metrics["task_id"] = context.task_id
    with tempfile.TemporaryDirectory(prefix="clicktune-train-") as tmp:
        exported = start.kind.export(
            model,
            Path(tmp) / "model",
            settings,
            parent=start.parent,
            base_model=start.base_model,
            metrics=metrics,
        )
        int8 = add_int8_variant(
            exported.path,
            data.judgments,
            data.doc_texts,
            settings.export,
            max_length=settings.train.max_length,
        )
        metrics.update(int8.metrics() if int8 is not None else {})
        version = publish(context.registry, exported.path)
    context.registry.set_alias("candidate", version.version)
    lineage = Lineage(
        version=version.version,
        batch_id=result.batch_id,
        parent=start.parent,
        kind=version.kind,
        dimension=version.dimension,
        config=best.settings.model_dump(),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
    )
    context.tracker.register(best.run_id, lineage, version.path)
    context.tracker.set_alias("candidate", version.version)
    return exported, int8, version


def _metrics(best: Trial, result: IterationResult) -> dict[str, Any]:
    report = best.report
    metrics: dict[str, Any] = {
        "side": result.side,
        "sessions": result.sessions,
        "pairs": report.pairs,
        "steps": report.steps,
        "first_loss": report.first_loss,
        "final_loss": report.final_loss,
        "pairs_per_s": report.pairs_per_s,
        "effective_batch": report.effective_batch,
    }
    metrics.update({f"val_{k}": v for k, v in best.scores.validation.items()})
    metrics.update({f"live_val_{k}": v for k, v in result.live.validation.items()})
    metrics.update({f"gate_{k}": v for k, v in result.decision.checks.items()})
    metrics.update(ordinal_metrics(result.ordinals))
    return metrics


def collect_pairs(
    sessions: Sequence[Session], settings: TunerSettings, propensity: Propensity | None = None
) -> tuple[list[TrainingPair], PairStats]:
    """Training pairs from `sessions`; `NoTrainingDataError` when there is nothing to learn."""
    if not sessions:
        raise NoTrainingDataError(
            "no sessions to train on: the UBI query index holds no queries in the window"
        )
    stats = PairStats()
    propensity = propensity if propensity is not None else from_settings(settings, sessions)
    pairs = pairs_of_round(sessions, settings, propensity, stats)
    if not pairs:
        raise NoTrainingDataError(
            f"no training pairs from {stats.sessions} sessions: {stats.without_hits} had no "
            f"hits, {stats.bot_like} looked like bots, {stats.without_outcome} had no action in "
            f"outcome_weights {sorted(settings.outcome_weights)}"
        )
    return pairs, stats

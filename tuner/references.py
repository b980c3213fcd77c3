"""Reference models the demo measures beside the click-trained one, on the same test queries.

- `supervised`: the base model fine-tuned on the collection's own train judgments (every judged
  relevant document of a train query is a positive, weighted by its grade). Clicks can at best
  approach what the true labels teach, so this is the yardstick for the click-trained uplift.
- `clicks`: the base model fine-tuned once on all the run's click sessions with the tuner's
  position-bias correction (propensities fitted from those sessions), as `bench.uplift` does.
- `no_ipw`: the same, without position-bias correction (every examination propensity 1): the
  ablation. `clicks` against `no_ipw` is like for like (same sessions, one fine-tune from the
  base each), so it shows what the correction buys; the loop's rounds train incrementally and
  behind a gate, so they are not.

Both are scored in memory (exact search over the whole corpus with the torch model), together
with the base model measured the same way, so their uplifts compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from serving.index.corpus import document_text
from tuner.config import PropensityKind, TunerSettings
from tuner.iteration import collect_pairs
from tuner.judged import JudgedCollection
from tuner.pairs import TrainingPair
from tuner.session_eval import evaluate_collection_in_memory, torch_embedder
from tuner.sessions import Session

__all__ = [
    "Reference",
    "base_metrics",
    "click_pairs",
    "no_ipw_settings",
    "supervised_pairs",
    "train_reference",
]

Notify = Callable[[str], None]
TEXT_FIELDS = ["title", "text"]


@dataclass(frozen=True)
class Reference:
    """A reference model's test metrics, with the pairs and steps it was trained on."""

    metrics: dict[str, float]
    pairs: int
    steps: int
    seconds: float
    effective_batch: float | None = None  # mean Kish effective batch per step


def supervised_pairs(collection: JudgedCollection, split: str = "train") -> list[TrainingPair]:
    """One pair per judged relevant (grade > 0) document of each `split` query."""
    queries = collection.split_queries(split)
    return [
        TrainingPair(queries[qid], doc_id, float(grade))
        for qid in sorted(queries)
        for doc_id, grade in sorted(collection.qrels.get(qid, {}).items())
        if grade > 0
    ]


def no_ipw_settings(settings: TunerSettings) -> TunerSettings:
    """`settings` with position-bias correction off: p(k) = 1 at every rank."""
    return settings.model_copy(
        update={"propensity": PropensityKind.power_law, "propensity_eta": 0.0}
    )


def click_pairs(sessions: Sequence[Session], settings: TunerSettings) -> list[TrainingPair]:
    """The training pairs `settings` make of `sessions` (as the tuner's iteration builds them)."""
    pairs, _ = collect_pairs(sessions, settings)
    return pairs


def train_reference(
    collection: JudgedCollection,
    pairs: Sequence[TrainingPair],
    settings: TunerSettings,
    split: str = "test",
    progress: bool = False,
) -> Reference:
    """Fine-tune the base model on `pairs` with `settings.train`, then score it on `split`."""
    from tuner.base_models import load_text_model
    from tuner.train import fine_tune

    model = load_text_model(settings.train.base_model)
    texts = corpus_texts(collection)
    report = fine_tune(model, pairs, texts, settings.train, progress=progress)
    metrics = evaluate_collection_in_memory(torch_embedder(model), collection, split)
    return Reference(metrics, report.pairs, report.steps, report.seconds, report.effective_batch)


def base_metrics(
    collection: JudgedCollection, settings: TunerSettings, split: str = "test"
) -> dict[str, float]:
    """The untrained base model scored the same way as the references."""
    from tuner.base_models import load_text_model

    model = load_text_model(settings.train.base_model)
    return evaluate_collection_in_memory(torch_embedder(model), collection, split)


def corpus_texts(collection: JudgedCollection) -> dict[str, str]:
    return {str(doc["_id"]): document_text(doc, TEXT_FIELDS) for doc in collection.corpus()}

"""One training iteration: sessions -> pairs -> fine-tune the live model -> ONNX -> registry.

The new version is registered with the live version as its parent; moving the `production`
alias is a separate decision (`clicktune train --promote`, later the gate and A/B monitor).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opensearchpy import OpenSearch

from ingest.config import IngestSettings
from serving.corpus import document_text
from serving.errors import RegistryError
from serving.registry import ModelVersion
from tuner.base_models import TORCH_WEIGHTS_DIR
from tuner.config import TunerSettings
from tuner.errors import NoTrainingDataError
from tuner.pairs import PairStats, TrainingPair, build_pairs
from tuner.propensity import from_settings
from tuner.publish import ModelRegistry, model_metadata, publish
from tuner.sessions import Session, read_sessions

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from tuner.export import ExportReport
    from tuner.train import TrainReport

__all__ = [
    "DocumentSource",
    "IterationResult",
    "StartPoint",
    "collect_pairs",
    "doc_texts_for",
    "run_training_iteration",
    "start_model",
]


class DocumentSource(Protocol):
    """Where document fields come from (`serving.vector_index.DocumentIndex`)."""

    def get_documents(self, ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass(frozen=True)
class StartPoint:
    """The model an iteration starts from and the lineage it records."""

    model: SentenceTransformer
    parent: str | None
    base_model: str
    source: str


@dataclass(frozen=True)
class IterationResult:
    """What one iteration produced; `version` is registered but not promoted."""

    version: ModelVersion
    sessions: int
    pairs: int
    pair_stats: PairStats
    start: str
    train: TrainReport
    export: ExportReport


def run_training_iteration(
    client: OpenSearch,
    *,
    ingest_settings: IngestSettings,
    tuner_settings: TunerSettings,
    registry: ModelRegistry,
    documents: DocumentSource,
    text_fields: list[str],
    since: datetime | None = None,
    start_ref: str = "production",
    progress: bool = True,
) -> IterationResult:
    """Train once on the sessions since `since` and register the result as a new version."""
    from tuner.export import export_text_model
    from tuner.train import fine_tune

    sessions = read_sessions(client, ingest_settings, since)
    pairs, stats = collect_pairs(sessions, tuner_settings)
    doc_texts = doc_texts_for(documents, pairs, text_fields)
    start = start_model(registry, tuner_settings.train.base_model, start_ref)
    report = fine_tune(start.model, pairs, doc_texts, tuner_settings.train, progress=progress)
    metrics = {
        "sessions": len(sessions),
        "pairs": report.pairs,
        "steps": report.steps,
        "first_loss": report.first_loss,
        "final_loss": report.final_loss,
        "pairs_per_s": report.pairs_per_s,
    }
    with tempfile.TemporaryDirectory(prefix="clicktune-train-") as tmp:
        exported = export_text_model(
            start.model,
            Path(tmp) / "model",
            version="unregistered",
            parent=start.parent,
            base_model=start.base_model,
            max_length=tuner_settings.train.max_length,
            metrics=metrics,
            min_cosine=tuner_settings.export.parity_min_cosine,
            opset_version=tuner_settings.export.opset_version,
        )
        version = publish(registry, exported.path)
    return IterationResult(
        version=version,
        sessions=len(sessions),
        pairs=len(pairs),
        pair_stats=stats,
        start=start.source,
        train=report,
        export=exported,
    )


def collect_pairs(
    sessions: Sequence[Session], settings: TunerSettings
) -> tuple[list[TrainingPair], PairStats]:
    """Training pairs from `sessions`; `NoTrainingDataError` when there is nothing to learn."""
    if not sessions:
        raise NoTrainingDataError(
            "no sessions to train on: the UBI query index holds no queries in the window"
        )
    stats = PairStats()
    pairs = build_pairs(
        sessions,
        settings.outcome_weights,
        from_settings(settings),
        settings.max_inverse_propensity,
        settings.max_clicks_per_session,
        stats,
    )
    if not pairs:
        raise NoTrainingDataError(
            f"no training pairs from {stats.sessions} sessions: {stats.without_hits} had no "
            f"hits, {stats.bot_like} looked like bots, {stats.without_outcome} had no action in "
            f"outcome_weights {sorted(settings.outcome_weights)}"
        )
    return pairs, stats


def doc_texts_for(
    documents: DocumentSource, pairs: Sequence[TrainingPair], text_fields: list[str]
) -> dict[str, str]:
    """Text (the `text_fields` joined) of every document the pairs name that the index has."""
    ids = sorted({p.positive_id for p in pairs} | {n for p in pairs for n in p.hard_negative_ids})
    found = documents.get_documents(ids)
    texts = {doc_id: document_text(dict(doc), text_fields) for doc_id, doc in found.items()}
    texts = {doc_id: text for doc_id, text in texts.items() if text}
    if not texts:
        raise NoTrainingDataError(
            f"none of the {len(ids)} documents the sessions name has text in fields "
            f"{text_fields} of the document index (e.g. {ids[:3]})"
        )
    return texts


def start_model(registry: ModelRegistry, base_model: str, ref: str = "production") -> StartPoint:
    """The live version's torch weights, or `base_model` when there are none to start from."""
    from tuner.base_models import load_text_model

    try:
        live = registry.get(ref)
    except RegistryError:
        live = None
    if live is not None and (live.path / TORCH_WEIGHTS_DIR).is_dir():
        lineage = str(model_metadata(live).get("base_model") or base_model)
        model = load_text_model(str(live.path / TORCH_WEIGHTS_DIR))
        return StartPoint(model, live.version, lineage, f"{ref} ({live.version})")
    parent = live.version if live is not None else None
    return StartPoint(load_text_model(base_model), parent, base_model, f"base model {base_model}")

"""What differs between text and CLIP models in an iteration, behind one seam: `ModelKind`.

An iteration loads the start model, reads the documents the sessions name, trains, scores and
exports; only how each step is done depends on the model's kind (`clicktune.json` "kind"):

    step        TEXT (sentence-transformers)          CLIP (open_clip)
    load        tuner.base_models.load_text_model     tuner.clip.load_clip_model
    documents   text fields joined (doc_texts_for)    the image field's image, else the text
    train       tuner.train.fine_tune                 tuner.train_clip.fine_tune_clip (images)
                (tuner.torchrun when data-parallel)
    embed       texts -> text model                   texts -> text tower, images -> image tower
    export      tuner.export.export_text_model        tuner.export_clip.export_clip_model

`kind_named(version.kind)` picks one; the iteration never branches on the kind itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from serving.errors import CorpusError
from serving.index.corpus import document_text
from tuner.base_models import TORCH_WEIGHTS_DIR
from tuner.config import TunerSettings
from tuner.errors import ModelLoadError, NoTrainingDataError, TrainConfigError
from tuner.pairs import TrainingPair
from tuner.session_eval import Embed, torch_embedder

if TYPE_CHECKING:
    from tuner.export import ExportReport
    from tuner.train import TrainReport

__all__ = ["CLIP", "TEXT", "DocumentSource", "ModelKind", "doc_texts_for", "kind_named"]

log = logging.getLogger(__name__)


class DocumentSource(Protocol):
    """Where document fields come from (`serving.index.vector_index.DocumentIndex`)."""

    def get_documents(self, ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass(frozen=True)
class DocFields:
    """Which document fields feed a model: text fields, and the image field (CLIP only)."""

    text_fields: list[str]
    image_field: str | None = "image"


class ModelKind(Protocol):
    """Load, read documents for, train, embed with and export one kind of model."""

    name: str
    weights_dir: str  # the torch weights inside a registered model directory

    def load(self, name_or_path: str) -> Any: ...

    def documents(
        self, source: DocumentSource, ids: Sequence[str], fields: DocFields
    ) -> dict[str, Any]: ...

    def train(
        self,
        model: Any,
        pairs: Sequence[TrainingPair],
        docs: Mapping[str, Any],
        settings: Any,
        progress: bool = True,
    ) -> TrainReport: ...

    def embedder(self, model: Any) -> Embed: ...

    def export(
        self, model: Any, out_dir: Path, settings: TunerSettings, **lineage: Any
    ) -> ExportReport: ...


class TextKind:
    """sentence-transformers models: documents are the joined text fields."""

    name = "text"
    weights_dir = TORCH_WEIGHTS_DIR

    def load(self, name_or_path: str) -> Any:
        from tuner.base_models import load_text_model

        return load_text_model(name_or_path)

    def documents(
        self, source: DocumentSource, ids: Sequence[str], fields: DocFields
    ) -> dict[str, Any]:
        return _texts(source.get_documents(list(ids)), fields.text_fields)

    def train(self, model, pairs, docs, settings, progress=True):  # type: ignore[no-untyped-def]
        if settings.distributed.world_size > 1:  # torchrun's ranks train, this process waits
            from tuner.torchrun import train_data_parallel

            return train_data_parallel(model, pairs, docs, settings, progress=progress)
        from tuner.train import fine_tune

        return fine_tune(model, pairs, docs, settings, progress=progress)

    def embedder(self, model: Any) -> Embed:
        return torch_embedder(model)

    def export(
        self, model: Any, out_dir: Path, settings: TunerSettings, **lineage: Any
    ) -> ExportReport:
        from tuner.export import export_text_model

        return export_text_model(
            model,
            out_dir,
            version="unregistered",
            max_length=settings.train.max_length,
            min_cosine=settings.export.parity_min_cosine,
            opset_version=settings.export.opset_version,
            **lineage,
        )


class ClipKind:
    """open_clip models: a document is its image when it has one (else its text, for scoring)."""

    name = "clip"
    weights_dir = "clip"  # tuner.clip.CLIP_WEIGHTS_DIR, without importing open_clip here

    def load(self, name_or_path: str) -> Any:
        from tuner.clip import load_clip_model

        return load_clip_model(name_or_path)

    def documents(
        self, source: DocumentSource, ids: Sequence[str], fields: DocFields
    ) -> dict[str, Any]:
        from serving.config import ImageSettings
        from serving.index.doc_images import ImageReader, load_image

        # Documents already in the index: a local path there came from `clicktune index
        # --trust-local-images` (the API admits only data: URIs and allowed hosts).
        reader = ImageReader(ImageSettings(), local_paths=True)
        found = source.get_documents(list(ids))
        docs: dict[str, Any] = _texts(found, fields.text_fields)
        for doc_id, doc in found.items():
            value = doc.get(fields.image_field) if fields.image_field else None
            if not value:
                continue
            try:
                docs[doc_id] = load_image(value, reader)
            except CorpusError as exc:  # one unreadable image must not stop the iteration
                log.warning("document %r: image skipped: %s", doc_id, exc)
        return docs

    def train(self, model, pairs, docs, settings, progress=True):  # type: ignore[no-untyped-def]
        from tuner.train_clip import fine_tune_clip

        if settings.distributed.world_size > 1:
            raise TrainConfigError(
                f"tuner.train.distributed world size {settings.distributed.world_size}: "
                f"data-parallel training runs text models only, this start model is CLIP "
                f"(set nproc_per_node and nnodes to 1)"
            )
        images = {d: v for d, v in docs.items() if not isinstance(v, str)}
        return fine_tune_clip(model, pairs, images, settings, progress=progress)

    def embedder(self, model: Any) -> Embed:
        return clip_embedder(model)

    def export(
        self, model: Any, out_dir: Path, settings: TunerSettings, **lineage: Any
    ) -> ExportReport:
        from tuner.export_clip import export_clip_model

        return export_clip_model(
            model,
            out_dir,
            version="unregistered",
            min_cosine=settings.export.parity_min_cosine,
            opset_version=settings.export.opset_version,
            **lineage,
        )


def clip_embedder(clip: Any, batch_size: int = 32) -> Embed:
    """`Embed` of a CLIP model: strings through the text tower, images through the image tower,
    rows in input order, L2-normalised (so text queries score against image documents)."""
    import torch
    import torch.nn.functional as F

    def embed(items: Sequence[Any]) -> np.ndarray:
        if not items:  # the dimension is whatever the text tower gives
            return embed([""])[:0]
        out: list[np.ndarray | None] = [None] * len(items)
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        images = [i for i, item in enumerate(items) if not isinstance(item, str)]
        with torch.no_grad():
            for rows, tower in ((texts, _text_batch), (images, _image_batch)):
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    vectors = F.normalize(tower(clip, [items[i] for i in chunk]), dim=-1)
                    for row, vector in zip(chunk, vectors.float().cpu().numpy(), strict=True):
                        out[row] = vector
        return np.stack(out).astype(np.float32)  # type: ignore[arg-type]

    return embed


def _text_batch(clip: Any, texts: list[str]) -> Any:
    return clip.model.encode_text(clip.tokenizer(texts).to(clip.device))  # (B, D)


def _image_batch(clip: Any, images: list[Any]) -> Any:
    import torch

    pixels = torch.stack([clip.preprocess(image) for image in images]).to(clip.device)
    return clip.model.encode_image(pixels)  # (B, D)


def _texts(found: Mapping[str, Mapping[str, Any]], text_fields: list[str]) -> dict[str, Any]:
    texts = {d: document_text(dict(doc), text_fields) for d, doc in found.items()}
    return {d: text for d, text in texts.items() if text}


TEXT = TextKind()
CLIP = ClipKind()
_KINDS: dict[str, ModelKind] = {TEXT.name: TEXT, CLIP.name: CLIP}


def kind_named(name: str) -> ModelKind:
    """The `ModelKind` for a `clicktune.json` kind ("text", "clip")."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ModelLoadError(
            f"model kind {name!r} cannot be trained: use one of {sorted(_KINDS)}"
        ) from None


def doc_texts_for(
    documents: DocumentSource,
    pairs: Sequence[TrainingPair],
    text_fields: list[str],
    extra_ids: Iterable[str] = (),
    *,
    kind: ModelKind = TEXT,
    image_field: str | None = "image",
) -> dict[str, Any]:
    """What `kind` embeds (text; or image, for CLIP) of every document the pairs or `extra_ids`
    name; `NoTrainingDataError` when none of them has any."""
    named = {p.positive_id for p in pairs} | {n for p in pairs for n in p.hard_negative_ids}
    ids = sorted(named | set(extra_ids))
    docs = kind.documents(documents, ids, DocFields(text_fields, image_field))
    if not docs:
        raise NoTrainingDataError(
            f"none of the {len(ids)} documents the sessions name has text in fields "
            f"{text_fields} (or an image in {image_field!r}) in the document index "
            f"(e.g. {ids[:3]})"
        )
    return docs

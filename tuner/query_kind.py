"""Query-side candidates in an iteration: a query adapter or a query tower over the live
index's frozen encoder.

`QueryModel` is what an iteration trains and scores for `train.method: query_adapter` or
`query_tower`: the sentence-transformers encoder the live index was built with (document model
Y, never trained here) and on the query side either a `QueryAdapter` on its embeddings or a
tower of its own (a trained copy of the encoder); neither: the identity, Y itself. `QUERY` is
its `tuner.model_kinds.ModelKind`:

    step        QUERY
    load        `query_start`: the live version's encoder (its own, or its document model's,
                saved in `st/`) and, when the live version is a query model, its adapter or
                its tower (`query_st/`)
    documents   text fields joined, as for text models
    train       by method: tuner.query_adapter.fine_tune_query_adapter, from the live adapter
                if any; tuner.query_tower.fine_tune_query_tower, from the live tower if any
                (training one side drops the other: a candidate has one)
    embed       `TwoSided`: queries through the adapter or the tower, documents through the
                frozen encoder (computed once per text and shared by every copy)
    export      tuner.export_query ("query model X over document model Y"): an adapter folded
                into the document model's registered graph (`document_dir`); a tower exported
                as a graph of its own

The live index keeps its vectors: a query candidate is deployed by moving the registry alias.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.models.registry import ModelVersion
from tuner.base_models import TORCH_WEIGHTS_DIR
from tuner.config import TrainMethod, TunerSettings
from tuner.embed_sides import Embed, TwoSided
from tuner.errors import TrainConfigError
from tuner.pairs import TrainingPair
from tuner.publish import model_metadata
from tuner.session_eval import torch_embedder

if TYPE_CHECKING:
    from tuner.model_kinds import ModelKind

__all__ = ["QUERY", "QueryKind", "QueryModel", "embedder_for", "load_query_model"]


@dataclass
class QueryModel:
    """The frozen document `encoder` of `document_model` and an adapter on its queries."""

    encoder: Any  # SentenceTransformer: the model that built the live index; never trained
    document_model: str  # the registry version whose index the query model searches
    adapter: Any = None  # tuner.query_adapter.QueryAdapter; None: the identity
    doc_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # text -> vector
    document_dir: Path | None = None  # document_model's registered directory: its ONNX graph
    tower: Any = None  # SentenceTransformer for queries (method query_tower); None: encoder

    def __deepcopy__(self, memo: dict[int, Any]) -> QueryModel:
        # A hyperparameter set trains its own query side; the encoder and its document vectors
        # are the same frozen ones for all (copying MiniLM per set would cost ~90 MB each).
        return QueryModel(
            self.encoder,
            self.document_model,
            copy.deepcopy(self.adapter, memo),
            self.doc_vectors,
            self.document_dir,
            copy.deepcopy(self.tower, memo),
        )


def load_query_model(live: ModelVersion, document: ModelVersion | None = None) -> QueryModel:
    """The query model an iteration starts from over `live`'s index: `live`'s own encoder and,
    for a query model, its adapter or tower (a text model: the identity over itself).
    `document`, the registered document model of a live query model, lends its ONNX graph and
    weights to the export (none: the export writes the encoder's anew)."""
    from tuner.base_models import load_text_model
    from tuner.query_adapter import ADAPTER_FILE, load_adapter
    from tuner.query_tower import QUERY_TOWER_DIR

    if live.kind not in ("text", "query"):
        raise TrainConfigError(
            f"a query-side method trains over a text encoder; the live model {live.version!r} "
            f"is kind {live.kind!r}: use method full or lora for it"
        )
    weights = live.path / TORCH_WEIGHTS_DIR
    if not weights.is_dir():
        raise TrainConfigError(
            f"a query-side method needs the live model's torch weights ({weights}) to embed "
            f"queries as its index's documents were: {live.version!r} has none"
        )
    encoder = load_text_model(str(weights))
    meta = model_metadata(live)
    if meta.get("max_length") is not None:
        encoder.max_seq_length = int(meta["max_length"])  # as served (start_point explains)
    if live.document_model is None:
        return QueryModel(encoder, live.version, document_dir=live.path)
    paired = document is not None and document.version == live.document_model
    document_dir = document.path if paired and document is not None else None
    query = QueryModel(encoder, live.document_model, document_dir=document_dir)
    if "query_tower" in meta:
        query.tower = load_text_model(str(live.path / QUERY_TOWER_DIR))
        query.tower.max_seq_length = encoder.max_seq_length
    else:
        query.adapter = load_adapter(live.path / ADAPTER_FILE, meta["query_adapter"])
    return query


class QueryKind:
    """Query models: an adapter or a tower trained over a frozen text encoder (module doc)."""

    name = "query"
    weights_dir = TORCH_WEIGHTS_DIR

    def load(self, name_or_path: str) -> Any:
        raise TrainConfigError(
            f"a query model starts from the live version (its index's encoder), not from "
            f"{name_or_path!r}: use tuner.query_kind.load_query_model"
        )

    def documents(self, source: Any, ids: Sequence[str], fields: Any) -> dict[str, Any]:
        from tuner.model_kinds import TEXT

        return TEXT.documents(source, ids, fields)

    def train(
        self,
        model: QueryModel,
        pairs: Sequence[TrainingPair],
        docs: Mapping[str, Any],
        settings: Any,
        progress: bool = True,
    ) -> Any:
        from tuner.query_adapter import fine_tune_query_adapter
        from tuner.query_tower import fine_tune_query_tower

        if settings.method == TrainMethod.query_tower:
            tower = fine_tune_query_tower(
                model.encoder, pairs, docs, settings, progress=progress, initial=model.tower
            )
            model.tower, model.adapter = tower.tower, None
            return tower.report
        settings = settings.model_copy(update={"method": TrainMethod.query_adapter})
        run = fine_tune_query_adapter(
            model.encoder, pairs, docs, settings, progress=progress, initial=model.adapter
        )
        model.adapter, model.tower = run.adapter, None
        return run.report

    def embedder(self, model: QueryModel) -> Embed:
        return TwoSided(_query_embed(model), _cached(torch_embedder(model.encoder), model))

    def export(
        self, model: QueryModel, out_dir: Path, settings: TunerSettings, **lineage: Any
    ) -> Any:
        from tuner.export_query import export_query_model, export_query_tower
        from tuner.query_adapter import QueryAdapter

        options = {
            "version": "unregistered",
            "document_model": model.document_model,
            "max_length": settings.train.max_length,
            "min_cosine": settings.export.parity_min_cosine,
            "opset_version": settings.export.opset_version,
            "document_dir": model.document_dir,
            **lineage,
        }
        if model.tower is not None:
            return export_query_tower(model.tower, model.encoder, out_dir, **options)
        adapter = model.adapter
        if adapter is None:  # an untrained start exported as is: the identity
            dimension = model.encoder.get_sentence_embedding_dimension()
            adapter = QueryAdapter(dimension, settings.train.query_adapter_rank)
        return export_query_model(model.encoder, adapter, out_dir, **options)


def _query_embed(model: QueryModel) -> Embed:
    base = torch_embedder(model.encoder)

    def embed(texts: Sequence[str]) -> np.ndarray:
        if model.tower is not None:  # read at call time: training sets it
            return torch_embedder(model.tower)(texts)  # (n, D), the query tower's
        vectors = base(texts)  # (n, D), the frozen encoder's
        if model.adapter is None or not len(texts):
            return vectors
        import torch

        with torch.no_grad():
            adapter = model.adapter.to("cpu").eval()
            return adapter(torch.from_numpy(vectors).float()).numpy().astype(np.float32)

    return embed


def _cached(embed: Embed, model: QueryModel) -> Embed:
    """`embed` remembering each text's vector in `model.doc_vectors` (the frozen side)."""

    def cached(texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in model.doc_vectors})
        if missing:
            model.doc_vectors.update(zip(missing, embed(missing), strict=True))
        if not texts:
            return embed(texts)
        return np.stack([model.doc_vectors[t] for t in texts]).astype(np.float32)

    return cached


QUERY = QueryKind()


def embedder_for(kind: ModelKind) -> Callable[[Any], Embed]:
    """What embeds with a model of `kind` or a query model over it: a `QueryModel` with its
    two sides (`QUERY`), any other model with `kind`'s embedder."""

    def embedder(model: Any) -> Embed:
        return QUERY.embedder(model) if isinstance(model, QueryModel) else kind.embedder(model)

    return embedder

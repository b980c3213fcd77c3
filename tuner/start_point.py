"""Where a training iteration starts: the live version's torch weights, or a base model.

`start_model` loads the model an iteration fine-tunes (and the gate scores as the live side) with
the lineage it records; `kind_of` says which kind (text, CLIP) the registry serves.

A query-side method (`train.method: query_adapter` or `query_tower`) starts from a
`tuner.query_kind.QueryModel` over the live version's encoder. A full method over a live query
model starts from that model's encoder (its document model's weights) while the gate scores the
query model itself (`live`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.errors import RegistryError
from serving.models.registry import ModelVersion
from tuner.candidate_policy import is_query_side
from tuner.config import TrainMethod
from tuner.errors import TrainConfigError
from tuner.model_kinds import TEXT, ModelKind, kind_named
from tuner.publish import ModelRegistry, model_metadata

__all__ = ["StartPoint", "kind_of", "start_model"]


@dataclass(frozen=True)
class StartPoint:
    """The model an iteration starts from and the lineage it records."""

    model: Any  # SentenceTransformer, or tuner.clip.ClipModel for kind "clip"
    parent: str | None
    base_model: str
    source: str
    kind: ModelKind = TEXT
    live: Any = None  # the model the gate scores as live, when it is not `model` itself

    @property
    def live_model(self) -> Any:
        return self.model if self.live is None else self.live


def kind_of(registry: ModelRegistry, ref: str = "production") -> ModelKind:
    """The kind of registry model `ref` (what the iteration trains); text when there is none."""
    try:
        kind = registry.get(ref).kind
    except RegistryError:
        return TEXT
    return TEXT if kind == "query" else kind_named(kind)  # a query model reads text documents


def _truncate_as_served(model: Any, live: ModelVersion) -> None:
    """Make the live model's torch weights cut texts where its ONNX export does.

    Saved sentence-transformers weights keep the base model's own length (MiniLM: 256 tokens),
    while the version serves at the `max_length` it was exported with. Scored at 256 against a
    candidate trained and exported at 64, the live side of the gate was a model no user had
    seen: on cranfield's long abstracts it ranked a judged document first that search showed
    sixth, and candidates that clearly learned from the clicks were rejected at -0.29.
    """
    served = model_metadata(live).get("max_length")
    if served is not None and hasattr(model, "max_seq_length"):
        model.max_seq_length = int(served)


def start_model(
    registry: ModelRegistry,
    base_model: str,
    ref: str = "production",
    method: TrainMethod = TrainMethod.full,
) -> StartPoint:
    """The live version's torch weights, or a base model when there are none to start from.

    A text iteration falls back to `base_model`; a CLIP one to the live version's own
    `base_model` (a CLIP name: `base_model` of the settings names a text model). A query-side
    `method` needs a live version: its index is what the query model searches.
    """
    try:
        live = registry.get(ref)
    except RegistryError:
        live = None
    if is_query_side(method) or (live is not None and live.kind == "query"):
        return _query_start(live, ref, base_model, method, _document_of(registry, live))
    kind = kind_named(live.kind) if live is not None else TEXT
    lineage = str(model_metadata(live).get("base_model") or base_model) if live else base_model
    if live is not None and (live.path / kind.weights_dir).is_dir():
        model = kind.load(str(live.path / kind.weights_dir))
        _truncate_as_served(model, live)
        return StartPoint(model, live.version, lineage, f"{ref} ({live.version})", kind)
    parent = live.version if live is not None else None
    base = base_model if kind is TEXT else lineage
    return StartPoint(kind.load(base), parent, base, f"base model {base}", kind)


def _document_of(registry: ModelRegistry, live: ModelVersion | None) -> ModelVersion | None:
    """The registered document model of a live query model (None: not one, or no longer
    registered); its graph is what a query candidate's export folds into."""
    if live is None or live.document_model is None:
        return None
    try:
        return registry.get(live.document_model)
    except RegistryError:
        return None


def _query_start(
    live: ModelVersion | None,
    ref: str,
    base_model: str,
    method: TrainMethod,
    document: ModelVersion | None = None,
) -> StartPoint:
    """A query model over `live`'s index (query-side `method`), or, for a full method over a
    live query model, its encoder to fine-tune with the query model scored as live."""
    from tuner.query_kind import QUERY, load_query_model

    if live is None:
        raise TrainConfigError(
            f"method {method.value} trains a query model over the live index's document "
            f"encoder, and {ref!r} names no model: import and promote a text model first "
            "(clicktune models import)"
        )
    query = load_query_model(live, document)
    lineage = str(model_metadata(live).get("base_model") or base_model)
    source = f"{ref} ({live.version})"
    if is_query_side(method):
        source += f", queries over the frozen document model {query.document_model}"
        return StartPoint(query, live.version, lineage, source, QUERY)
    source += f": the encoder of its document model {query.document_model}"
    return StartPoint(query.encoder, live.version, lineage, source, TEXT, live=query)

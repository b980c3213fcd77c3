"""Load any registered model directory for serving: the one place that picks the encoder class.

`clicktune.json`'s `kind` decides: "text" -> `OnnxTextEncoder`, "clip" -> `OnnxClipEncoder`,
"query" -> a `PairedEncoder` (serving/encoders/encoder_pair.py): the query model's own graph for
queries, and for documents its `document_model`, a version of the registry `registry` (default: the
registry whose `versions/` folder holds the directory). Hot swap, `clicktune serve`, `index`,
`reindex` and the documents API all load through `load_model_dir`, so a CLIP model or a query
model works wherever a text model does. A CLIP encoder embeds queries
with its text tower (`encode`) and document images with its image tower (`encode_images`);
`image_tower` finds that tower behind serving's wrappers (micro-batcher, metrics).
`serving.encoder.runtime: auto` is decided here, once per model kind and process, by timing the
installed runtimes on the first model loaded (serving/encoders/runtime_choice.py,
`PROCESS_RUNTIMES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from serving.config import EncoderSettings
from serving.encoders.encoder import OnnxTextEncoder, ServableEncoder, wrapper_chain
from serving.encoders.encoder_pair import PairedEncoder
from serving.encoders.runtime_choice import PROCESS_RUNTIMES, RuntimeChooser
from serving.errors import ModelLoadError, RegistryError
from serving.models.model_dir import read_model_meta
from serving.models.registries import ModelRegistry
from serving.models.registry import LocalRegistry

__all__ = [
    "KINDS",
    "QUERY_KIND",
    "ImageEncoder",
    "image_tower",
    "load_model_dir",
    "model_kind",
]


@runtime_checkable
class ImageEncoder(Protocol):
    """Embeds images (PIL or uint8 HxWx3 arrays) into the same space as its texts."""

    def encode_images(self, images: Sequence[Any]) -> np.ndarray: ...


def _load_clip(path: Path, settings: EncoderSettings) -> ServableEncoder:
    from serving.encoders.clip_encoder import OnnxClipEncoder  # PIL loads only for CLIP models

    return OnnxClipEncoder.from_dir(path, settings)


KINDS: dict[str, Callable[[Path, EncoderSettings], ServableEncoder]] = {
    "text": OnnxTextEncoder.from_dir,
    "clip": _load_clip,
}
QUERY_KIND = "query"


def load_model_dir(
    path: Path,
    settings: EncoderSettings,
    registry: ModelRegistry | None = None,
    runtimes: RuntimeChooser | None = None,
) -> ServableEncoder:
    """The serving encoder of the model directory `path`, chosen by its `clicktune.json` kind;
    a query model comes with its document model from `registry`. A runtime of `auto` is decided
    by `runtimes` (default: this process's `PROCESS_RUNTIMES`)."""
    path = Path(path)
    runtimes = runtimes if runtimes is not None else PROCESS_RUNTIMES
    meta = read_model_meta(path, error=ModelLoadError)
    if meta["kind"] == QUERY_KIND:
        return _load_pair(path, meta, settings, registry, runtimes)
    loader = KINDS.get(meta["kind"])
    if loader is None:
        raise ModelLoadError(
            f"{path}: model kind {meta['kind']!r} is not servable; use one of "
            f"{[*KINDS, QUERY_KIND]}"
        )
    return runtimes.load(path, meta["kind"], settings, loader)


def _load_pair(
    path: Path,
    meta: dict[str, Any],
    settings: EncoderSettings,
    registry: ModelRegistry | None,
    runtimes: RuntimeChooser,
) -> PairedEncoder:
    """Query model `path` (its graph embeds queries) over its document model from `registry`."""
    name, document_model = meta["version"], meta["document_model"]
    registry = registry if registry is not None else _registry_holding(path, name, document_model)
    try:
        documents_dir = registry.get(document_model).path
    except RegistryError as exc:
        raise ModelLoadError(
            f"{path}: query model {name!r} searches the vectors of document model "
            f"{document_model!r}, which registry {registry.location} cannot give: {exc}"
        ) from exc
    kind = read_model_meta(documents_dir, error=ModelLoadError)["kind"]
    if kind not in KINDS:
        raise ModelLoadError(
            f"{path}: query model {name!r} names document model {document_model!r} of kind "
            f"{kind!r}; a document model must be one of {list(KINDS)}"
        )
    return PairedEncoder(
        runtimes.load(path, "text", settings, OnnxTextEncoder.from_dir),
        runtimes.load(documents_dir, kind, settings, KINDS[kind]),
    )


def _registry_holding(path: Path, name: str, document_model: str) -> LocalRegistry:
    """The registry whose `versions/` folder holds `path` (the registry's layout)."""
    if path.parent.name == "versions":
        return LocalRegistry(path.parent.parent)
    raise ModelLoadError(
        f"{path}: query model {name!r} needs its document model {document_model!r} from a "
        "registry, and the directory is not inside one; pass `registry=`"
    )


def image_tower(encoder: Any) -> ImageEncoder | None:
    """`encoder` itself or the encoder it wraps (`.inner`, any depth) that embeds images."""
    return next((e for e in wrapper_chain(encoder) if isinstance(e, ImageEncoder)), None)


def model_kind(encoder: Any) -> str:
    """ "clip" for an encoder with an image tower, else "text" (the kinds of `clicktune.json`)."""
    return "clip" if image_tower(encoder) is not None else "text"

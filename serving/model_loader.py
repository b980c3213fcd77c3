"""Load any registered model directory for serving: the one place that picks the encoder class.

`clicktune.json`'s `kind` decides: "text" -> `OnnxTextEncoder`, "clip" -> `OnnxClipEncoder`.
Hot swap, `clicktune serve`, `index`, `reindex` and the documents API all load through
`load_model_dir`, so a CLIP model works wherever a text model does. A CLIP encoder embeds queries
with its text tower (`encode`) and document images with its image tower (`encode_images`);
`image_tower` finds that tower behind serving's wrappers (micro-batcher, metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from serving.config import EncoderSettings
from serving.encoder import OnnxTextEncoder, ServableEncoder
from serving.errors import ModelLoadError
from serving.model_dir import read_model_meta

__all__ = [
    "KINDS",
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
    from serving.clip_encoder import OnnxClipEncoder  # PIL loads only for CLIP models

    return OnnxClipEncoder.from_dir(path, settings)


KINDS: dict[str, Callable[[Path, EncoderSettings], ServableEncoder]] = {
    "text": OnnxTextEncoder.from_dir,
    "clip": _load_clip,
}


def load_model_dir(path: Path, settings: EncoderSettings) -> ServableEncoder:
    """The serving encoder of the model directory `path`, chosen by its `clicktune.json` kind."""
    kind = read_model_meta(Path(path), error=ModelLoadError)["kind"]
    loader = KINDS.get(kind)
    if loader is None:
        raise ModelLoadError(
            f"{path}: model kind {kind!r} is not servable; use one of {list(KINDS)}"
        )
    return loader(Path(path), settings)


def image_tower(encoder: Any) -> ImageEncoder | None:
    """`encoder` itself or the encoder it wraps (`.inner`, any depth) that embeds images."""
    seen = 0
    while encoder is not None and seen < 16:  # wrappers nest a few deep, never in a cycle
        if isinstance(encoder, ImageEncoder):
            return encoder
        encoder, seen = getattr(encoder, "inner", None), seen + 1
    return None


def model_kind(encoder: Any) -> str:
    """ "clip" for an encoder with an image tower, else "text" (the kinds of `clicktune.json`)."""
    return "clip" if image_tower(encoder) is not None else "text"

"""Embed documents that may carry an image: the image tower when the model has one.

A document's image lives in one field (`serving.index.image_field`, default `image`) as
- a `data:image/...;base64,...` URI, or
- an `https://` / `http://` URL whose host is on `serving.index.images.allowed_hosts`, fetched
  under the rules of `serving.index.image_fetch` (public addresses only, redirects re-checked), or
- a local path or `file://` URL, read only by an `ImageReader(..., local_paths=True)`: what
  `clicktune index --trust-local-images` builds for a trusted local dataset, and what jobs over
  documents already in the index use (reindex, training). The API never builds one.

An image is decoded only when its header says it has at most `max_pixels` pixels and is in one of
`formats`; a request's images are decoded, preprocessed and embedded `decode_batch` at a time.
What a client sees of a refusal is generic (`serving.errors.ImageProblem`); the cause is logged.

Rule (one vector per document): with a CLIP model, a document whose image field is set is
embedded by the image tower and its text is not used; every other document, and every document
under a text model, is embedded from its text fields by the text tower. So text queries find
image documents (text-to-image search) and text documents in the same index alike.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from serving.config import ImageSettings, IndexSettings
from serving.encoders.encoder import Encoder
from serving.encoders.encoder_pair import document_encoder
from serving.encoders.model_loader import image_tower
from serving.errors import ImageError, ImageProblem
from serving.index.corpus import document_text
from serving.index.image_fetch import ImageFetcher

__all__ = [
    "ImageReader",
    "check_image_sources",
    "document_images",
    "embed_documents",
    "load_image",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@runtime_checkable
class PreprocessesImages(Protocol):
    """An image tower that can shrink one decoded image to what its `encode_images` takes."""

    def preprocess(self, image: Image.Image) -> np.ndarray: ...


class ImageReader:
    """Reads and decodes image field values under one policy (module docstring)."""

    def __init__(
        self,
        settings: ImageSettings,
        *,
        local_paths: bool = False,
        fetcher: ImageFetcher | None = None,
    ) -> None:
        self.settings = settings
        self.local_paths = local_paths
        self._fetcher = fetcher or ImageFetcher(settings)

    def check_source(self, value: Any) -> None:
        """Refuse a value this reader would never read (scheme, host, path); no network."""
        kind = self._kind(value)
        if kind == "url":
            self._fetcher.check_source(value.strip())

    def read(self, value: Any) -> bytes:
        """The encoded bytes of the image `value` names, at most `max_bytes`."""
        kind = self._kind(value)
        value = value.strip()
        if kind == "data":
            return self._data_uri(value)
        if kind == "url":
            return self._fetcher.fetch(value)
        return self._file(value)

    def load(self, value: Any) -> Image.Image:
        """A decoded RGB image, refused before decoding when over the limits."""
        data = self.read(value)
        try:
            with Image.open(io.BytesIO(data), formats=self.settings.formats) as image:
                self._check_pixels(*image.size)
                return image.convert("RGB")
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own check, before ours
            raise ImageError(
                ImageProblem.TOO_MANY_PIXELS, str(exc), limit=self.settings.max_pixels
            ) from exc
        except Exception as exc:  # Pillow's plugins raise many types on malformed input
            raise ImageError(ImageProblem.UNDECODABLE, f"{type(exc).__name__}: {exc}") from exc

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.settings.max_pixels:
            raise ImageError(
                ImageProblem.TOO_MANY_PIXELS,
                f"{width}x{height} pixels",
                limit=self.settings.max_pixels,
            )

    def _kind(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ImageError(ImageProblem.SOURCE, f"not a non-empty string: {_short(value)}")
        scheme = urlsplit(value.strip()).scheme.lower()
        if scheme == "data":
            return "data"
        if scheme in ("http", "https"):
            return "url"
        if self.local_paths and scheme in ("", "file"):
            return "path"
        raise ImageError(ImageProblem.SOURCE, f"{_short(value)} is neither data: nor http(s)")

    def _data_uri(self, value: str) -> bytes:
        header, _, payload = value.partition(",")
        if not header.lower().endswith(";base64"):
            raise ImageError(ImageProblem.UNDECODABLE, "data: URI without ;base64")
        cap = self.settings.max_bytes
        if len(payload) > (cap + 2) // 3 * 4:  # refused before decoding it
            raise ImageError(ImageProblem.TOO_LARGE, f"{len(payload)} base64 chars", limit=cap)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(ImageProblem.UNDECODABLE, f"invalid base64: {exc}") from exc

    def _file(self, value: str) -> bytes:
        parts = urlsplit(value)
        if parts.scheme.lower() == "file" and parts.netloc not in ("", "localhost"):
            raise ImageError(ImageProblem.SOURCE, f"file URL on host {parts.netloc!r}")
        path = Path(unquote(parts.path)) if parts.scheme else Path(value).expanduser()
        if not path.is_file():
            raise ImageError(ImageProblem.SOURCE, f"{_short(value)} is not a file")
        if path.stat().st_size > self.settings.max_bytes:
            raise ImageError(
                ImageProblem.TOO_LARGE,
                f"{path.stat().st_size} bytes",
                limit=self.settings.max_bytes,
            )
        return path.read_bytes()


def embed_documents(
    encoder: Encoder,
    docs: Sequence[Mapping[str, Any]],
    settings: IndexSettings,
    reader: ImageReader | None = None,
) -> np.ndarray:
    """One unit vector per document of `docs` (see the module rule), float32 [len(docs), dim],
    by `encoder`'s document side (serving/encoders/encoder_pair.py).

    `reader` defaults to the API's policy (no local paths)."""
    encoder = document_encoder(encoder)
    texts = [document_text(dict(doc), settings.text_fields) for doc in docs]
    tower = image_tower(encoder)
    with_image = [i for i, doc in enumerate(docs) if _image_value(doc, settings.image_field)]
    if tower is None or not with_image:
        return encoder.encode(texts)
    reader = reader or ImageReader(settings.images)
    out = np.zeros((len(docs), encoder.dimension), dtype=np.float32)
    prepare = tower.preprocess if isinstance(tower, PreprocessesImages) else None
    field = str(settings.image_field)
    for rows, images in _decoded_batches(docs, with_image, field, reader, prepare):
        out[rows] = tower.encode_images(images)
    rest = sorted(set(range(len(docs))) - set(with_image))
    if rest:
        out[rest] = encoder.encode([texts[i] for i in rest])
    return out


def check_image_sources(docs: Sequence[Mapping[str, Any]], settings: IndexSettings) -> None:
    """Refuse documents whose image field no API write may hold (any model: what is stored now
    is what a later CLIP reindex reads); nothing is fetched."""
    reader = ImageReader(settings.images)
    for i, doc in enumerate(docs):
        value = _image_value(doc, settings.image_field)
        if value:
            _labelled(_label(doc, i), reader.check_source, value)


def document_images(
    docs: Mapping[str, Mapping[str, Any]],
    settings: IndexSettings,
    reader: ImageReader | None = None,
) -> dict[str, Image.Image]:
    """The loaded image of every document in `docs` (id -> doc) whose image field is set."""
    reader = reader or ImageReader(settings.images)
    values = {doc_id: _image_value(doc, settings.image_field) for doc_id, doc in docs.items()}
    return {
        doc_id: _labelled(f"image of document {doc_id!r}", reader.load, value)
        for doc_id, value in values.items()
        if value
    }


def load_image(value: Any, reader: ImageReader | None = None) -> Image.Image:
    """One decoded RGB image; `reader` defaults to the API's policy (module docstring)."""
    reader = reader or ImageReader(ImageSettings())
    return _labelled(f"image {_short(value)}", reader.load, value)


def _decoded_batches(
    docs: Sequence[Mapping[str, Any]],
    rows: list[int],
    field: str,
    reader: ImageReader,
    prepare: Callable[[Image.Image], Any] | None,
) -> Iterator[tuple[list[int], list[Any]]]:
    """(rows, images) `decode_batch` at a time: a request never holds all its images decoded;
    with `prepare`, each full-size image is freed as soon as it is preprocessed."""
    size = reader.settings.decode_batch
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        images = []
        for i in batch:
            image = _labelled(_label(docs[i], i), reader.load, docs[i][field])
            images.append(prepare(image) if prepare is not None else image)
        yield batch, images


def _labelled(label: str, step: Callable[[Any], _T], value: Any) -> _T:
    """`step(value)`; an ImageError is logged with its cause and re-raised naming `label` only."""
    try:
        return step(value)
    except ImageError as exc:
        log.warning("%s refused (%s): %s", label, exc.problem.name, exc.detail)
        raise exc.about(label) from exc


def _label(doc: Mapping[str, Any], index: int) -> str:
    doc_id = doc.get("_id")
    return f"image of document {doc_id!r}" if doc_id else f"image of documents[{index}]"


def _image_value(doc: Mapping[str, Any], field: str | None) -> Any:
    return doc.get(field) if field else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}...'"

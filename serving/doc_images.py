"""Embed documents that may carry an image: the image tower when the model has one.

A document's image lives in one field (`serving.index.image_field`, default `image`) as
- a local file path (absolute, or relative to the serving process's working directory),
- a `file://`, `http://` or `https://` URL (fetched with a timeout and a size cap), or
- a `data:image/...;base64,...` URI (what tests and small uploads send).

Rule (one vector per document): with a CLIP model, a document whose image field is set is
embedded by the image tower and its text is not used; every other document, and every document
under a text model, is embedded from its text fields by the text tower. So text queries find
image documents (text-to-image search) and text documents in the same index alike.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import unquote, urlparse

import numpy as np

from serving.config import IndexSettings
from serving.corpus import document_text
from serving.encoder import Encoder
from serving.errors import CorpusError
from serving.model_loader import image_tower

__all__ = ["document_images", "embed_documents", "load_image"]


def embed_documents(
    encoder: Encoder, docs: Sequence[Mapping[str, Any]], settings: IndexSettings
) -> np.ndarray:
    """One unit vector per document of `docs` (see the module rule), float32 [len(docs), dim]."""
    texts = [document_text(dict(doc), settings.text_fields) for doc in docs]
    tower = image_tower(encoder)
    with_image = [i for i, doc in enumerate(docs) if _image_value(doc, settings.image_field)]
    if tower is None or not with_image:
        return encoder.encode(texts)
    out = np.zeros((len(docs), encoder.dimension), dtype=np.float32)
    field, timeout, cap = settings.image_field, settings.image_timeout_s, settings.max_image_bytes
    images = [load_image(docs[i][field], timeout, cap) for i in with_image]  # type: ignore[index]
    out[with_image] = tower.encode_images(images)
    rest = sorted(set(range(len(docs))) - set(with_image))
    if rest:
        out[rest] = encoder.encode([texts[i] for i in rest])
    return out


def document_images(
    docs: Mapping[str, Mapping[str, Any]], settings: IndexSettings
) -> dict[str, Any]:
    """The loaded image of every document in `docs` (id -> doc) whose image field is set."""
    timeout, cap = settings.image_timeout_s, settings.max_image_bytes
    values = {doc_id: _image_value(doc, settings.image_field) for doc_id, doc in docs.items()}
    return {doc_id: load_image(v, timeout, cap) for doc_id, v in values.items() if v}


def load_image(value: Any, timeout_s: float = 10.0, max_bytes: int = 20 * 1024 * 1024) -> Any:
    """A PIL RGB image from a path, a file/http(s) URL or a base64 data URI (module docstring)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str) or not value.strip():
        raise CorpusError(f"an image field must be a non-empty string, got {_short(value)}")
    data = _read(value.strip(), timeout_s, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise CorpusError(f"image {_short(value)} is not a readable image: {exc}") from exc


def _read(value: str, timeout_s: float, max_bytes: int) -> bytes:
    scheme = urlparse(value).scheme.lower()
    if scheme == "data":
        return _data_uri(value, max_bytes)
    if scheme in ("http", "https"):
        return _fetch(value, timeout_s, max_bytes)
    path = Path(unquote(urlparse(value).path)) if scheme == "file" else Path(value).expanduser()
    if not path.is_file():
        raise CorpusError(f"image {_short(value)} is neither a file, a URL nor a data: URI")
    if path.stat().st_size > max_bytes:
        raise CorpusError(f"image {_short(value)} exceeds max_image_bytes={max_bytes}")
    return path.read_bytes()


def _data_uri(value: str, max_bytes: int) -> bytes:
    header, _, payload = value.partition(",")
    if not header.endswith(";base64"):
        raise CorpusError(f"image {_short(value)}: a data: URI must be base64 (data:...;base64,)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorpusError(f"image {_short(value)}: invalid base64: {exc}") from exc
    if len(data) > max_bytes:
        raise CorpusError(f"image {_short(value)} exceeds max_image_bytes={max_bytes}")
    return data


def _fetch(url: str, timeout_s: float, max_bytes: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            data = response.read(max_bytes + 1)
    except (URLError, OSError, ValueError) as exc:
        raise CorpusError(f"image {_short(url)} cannot be fetched: {exc}") from exc
    if len(data) > max_bytes:
        raise CorpusError(f"image {_short(url)} exceeds max_image_bytes={max_bytes}")
    return data


def _image_value(doc: Mapping[str, Any], field: str | None) -> Any:
    return doc.get(field) if field else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}...'"

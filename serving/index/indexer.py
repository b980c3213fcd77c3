"""Build a fresh versioned index from a stream of documents and move the alias onto it."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from serving.encoders.encoder import Encoder
from serving.encoders.encoder_pair import document_encoder
from serving.errors import DocumentIndexError
from serving.index.doc_images import ImageReader, embed_documents
from serving.index.vector_index import DocumentIndex

__all__ = ["IndexReport", "index_corpus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What `index_corpus` did: the new index, documents in it, time taken, the alias moved."""

    index: str
    docs: int
    seconds: float
    alias: str
    previous: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "docs": self.docs,
            "seconds": self.seconds,
            "alias": self.alias,
        }


def index_corpus(
    docs: Iterable[dict[str, Any]],
    encoder: Encoder,
    doc_index: DocumentIndex,
    batch_size: int = 64,
    progress: bool = True,
    total: int | None = None,
    images: ImageReader | None = None,
) -> IndexReport:
    """Embed `docs` in batches into a new index for `encoder`'s document model, then swap the
    alias (a query model's document model embeds and names the index:
    serving/encoders/encoder_pair.py).

    The alias moves only after every document is written and the count checks out; on any
    failure the partial index is deleted and the alias keeps pointing where it did. `images`
    reads documents' images (default: the API's policy, no local paths).
    """
    started = time.perf_counter()
    encoder = document_encoder(encoder)
    batches = _batches(iter(docs), batch_size)
    first = next(batches, None)
    if first is None:
        raise DocumentIndexError("the corpus is empty: nothing to index")
    index = doc_index.create_version(encoder.version, encoder.dimension)
    try:
        written = _write(
            itertools.chain([first], batches), encoder, doc_index, index, progress, total, images
        )
        count = doc_index.refresh(index)
        if count != written:
            raise DocumentIndexError(
                f"index {index!r} holds {count} documents but {written} were written "
                "(duplicate _id values in the corpus?); the alias was not moved"
            )
        previous = doc_index.swap_alias(index)
    except BaseException:
        _drop(doc_index, index)
        raise
    seconds = round(time.perf_counter() - started, 3)
    log.info("indexed %d documents into %s in %.1f s", count, index, seconds)
    return IndexReport(
        index=index, docs=count, seconds=seconds, alias=doc_index.alias, previous=previous
    )


def _write(
    batches: Iterable[list[dict[str, Any]]],
    encoder: Encoder,
    doc_index: DocumentIndex,
    index: str,
    progress: bool,
    total: int | None,
    images: ImageReader | None,
) -> int:
    written = 0
    with tqdm(total=total, unit="docs", desc=index, disable=not progress) as bar:
        for batch in batches:
            vectors = embed_documents(encoder, batch, doc_index.settings, images)  # CLIP tower
            written += doc_index.bulk_index(index, batch, vectors)
            bar.update(len(batch))
    return written


def _batches(docs: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while batch := list(itertools.islice(docs, size)):
        yield batch


def _drop(doc_index: DocumentIndex, index: str) -> None:
    try:
        doc_index.delete(index)
    except Exception:  # the original error matters more than a failed cleanup
        log.warning("could not delete the partial index %s", index, exc_info=True)

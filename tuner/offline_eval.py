"""Evaluate a model on a judged collection through the real OpenSearch k-NN path.

The collection is embedded into its own evaluation index (`eval__<collection>__<fingerprint>`,
never the live alias) keyed by a fingerprint of the model file, so a second evaluation of the same
model reuses it. Queries of one split are embedded, searched with k-NN (k = 100) and scored with
the graded judgments.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from opensearchpy import OpenSearch

from serving.config import IndexSettings
from serving.encoders.encoder import Encoder
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from tuner.judged import JudgedCollection
from tuner.metrics import rank_metrics

log = logging.getLogger(__name__)

DEPTH = 100


@dataclass(frozen=True)
class EvalReport:
    """Metrics of one model on one split, and where they came from."""

    metrics: dict[str, float]
    queries: int
    index: str
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {**self.metrics, "queries": self.queries}


def model_fingerprint(model_dir: Path) -> str:
    """A short content hash of a model directory's ONNX file (index names are keyed on it)."""
    digest = hashlib.sha256()
    with (Path(model_dir) / "model.onnx").open("rb") as model:
        for chunk in iter(lambda: model.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def evaluation_index(
    client: OpenSearch, base: IndexSettings, collection: JudgedCollection, fingerprint: str
) -> DocumentIndex:
    """The document index that holds `collection` embedded by the model `fingerprint`."""
    name = "".join(c if c.isalnum() else "-" for c in collection.name.lower())
    settings = base.model_copy(
        update={"alias": f"eval__{name}__{fingerprint}", "prefix": f"eval__{name}"}
    )
    return DocumentIndex(client, settings)


def evaluate_collection(
    collection: JudgedCollection,
    encoder: Encoder,
    doc_index: DocumentIndex,
    split: str = "test",
    progress: bool = True,
) -> EvalReport:
    """nDCG@10, MRR@10, Recall@10/100 of `encoder` on the `split` queries, via k-NN search."""
    started = time.perf_counter()
    if doc_index.live_index() is None:
        index_corpus(collection.corpus(), encoder, doc_index, progress=progress)
    queries = collection.split_queries(split)
    if not queries:
        raise ValueError(f"split {split!r} of {collection.root} has no judged queries")
    ids = list(queries)
    vectors = encoder.encode([queries[q] for q in ids])
    run = {
        qid: {hit.id: hit.score for hit in doc_index.search_knn(vector, DEPTH)}
        for qid, vector in zip(ids, vectors, strict=True)
    }
    metrics = rank_metrics({q: collection.qrels[q] for q in ids}, run)
    seconds = round(time.perf_counter() - started, 2)
    log.info(
        "evaluated %s on %d %s queries in %.1f s: %s",
        encoder.version,
        len(ids),
        split,
        seconds,
        metrics,
    )
    return EvalReport(
        metrics=metrics, queries=len(ids), index=doc_index.live_index() or "", seconds=seconds
    )

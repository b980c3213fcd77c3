"""Hard negatives mined from the live index: the query's nearest documents no session rewarded.

With `train.negatives` ann_mined, a pair's hard negatives are not taken from what the user was
shown but from the index the live model serves: the `ann_depth` nearest documents to the query's
embedding (by the model that trains, before it trains), less every document any session of the
same query key rewarded (the positives of its pairs). These are the documents the live model
ranks high for the query without evidence that they satisfy it, the negatives EBR (Huang et al.,
KDD 2020) mined online; unlike skips they need no examination model.

The index is resolved before training (`resolve_mining_index`): `train.ann_index` when set,
else the live index behind the serving alias, and a name that does not exist is a
`TrainConfigError` naming it and the rule. `OpenSearchNeighbours` reads the serving
`DocumentIndex`; `ExactNeighbours` searches vectors held in memory (benches, tests). A training
round (the worker's, `clicktune train`) mines through `tuner.ann_mining`, within
`train.ann_max_queries` queries and reporting its progress.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
from opensearchpy.exceptions import OpenSearchException

from serving.errors import DocumentIndexError
from serving.index.vector_index import DocumentIndex, Hit
from tuner.config import NegativeSource, TrainSettings
from tuner.errors import TrainConfigError
from tuner.pairs import TrainingPair, query_key

__all__ = [
    "ExactNeighbours",
    "NeighbourIndex",
    "OpenSearchNeighbours",
    "mine_negatives",
    "mines_from_index",
    "resolve_mining_index",
]

MINED_PER_PAIR = 5  # kept per pair (the step uses the first with text)
EmbedQueries = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, D)


class NeighbourIndex(Protocol):
    """Where ann_mined negatives come from: a k-NN index of the corpus behind `alias`."""

    @property
    def alias(self) -> str: ...

    def index_exists(self, name: str) -> bool: ...

    def live_index(self) -> str | None: ...

    def search_knn(
        self, vector: Sequence[float], k: int, index: str | None = None
    ) -> list[Hit]: ...


def resolve_mining_index(index: NeighbourIndex, settings: TrainSettings, alias: str) -> str:
    """The index negatives ann_mined are searched in; `TrainConfigError` naming the index and
    the rule when it does not exist (called before training)."""
    if settings.ann_index is None:
        live = index.live_index()
        if live is None:
            raise TrainConfigError(
                f"tuner.train.negatives 'ann_mined' mines the live index behind alias "
                f"{alias!r}, which points at no index: index the corpus first, set "
                f"tuner.train.ann_index to an existing index, or choose another negative source"
            )
        return live
    if not index.index_exists(settings.ann_index):
        raise TrainConfigError(
            f"tuner.train.ann_index {settings.ann_index!r} does not exist: negatives "
            f"'ann_mined' must name an existing index or alias (None: the live index behind "
            f"{alias!r})"
        )
    return settings.ann_index


def mine_negatives(
    pairs: Sequence[TrainingPair],
    embed_queries: EmbedQueries,
    index: NeighbourIndex,
    index_name: str,
    depth: int,
    *,
    max_queries: int | None = None,
    searched: Callable[[int], None] = lambda done: None,
) -> list[TrainingPair]:
    """`pairs` with their hard negatives replaced by the `depth` nearest documents of their
    query in `index_name` that no pair of the same query key has as its positive.

    With `max_queries`, only that many query keys are searched, those with the most pairs
    (ties: first seen); the pairs of the others keep no hard negative (in-batch ones only).
    `searched(n)` is called after each of the n k-NN searches (progress)."""
    rewarded: dict[str, set[str]] = {}
    texts: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for pair in pairs:
        key = query_key(pair.query)
        rewarded.setdefault(key, set()).add(pair.positive_id)
        texts.setdefault(key, pair.query)
        counts[key] += 1
    keys = sorted(texts, key=lambda k: -counts[k])[:max_queries]  # stable: ties first seen
    vectors = embed_queries([texts[k] for k in keys]) if keys else np.zeros((0, 0))
    mined: dict[str, tuple[str, ...]] = {}
    for done, (key, vector) in enumerate(zip(keys, vectors, strict=True), start=1):
        hits = index.search_knn(vector.tolist(), depth, index=index_name)
        mined[key] = tuple(h.id for h in hits if h.id not in rewarded[key])[:MINED_PER_PAIR]
        searched(done)
    return [
        replace(p, hard_negative_ids=mined.get(query_key(p.query), ()), negative_weights=())
        for p in pairs
    ]


def mines_from_index(settings: TrainSettings) -> bool:
    """Whether `settings` take their hard negatives from an index (negatives ann_mined)."""
    return settings.negatives is NegativeSource.ann_mined


class OpenSearchNeighbours:
    """`NeighbourIndex` over the serving `DocumentIndex` (its client and alias)."""

    def __init__(self, documents: DocumentIndex) -> None:
        self.documents = documents

    @property
    def alias(self) -> str:
        return self.documents.alias

    def index_exists(self, name: str) -> bool:
        try:
            return bool(self.documents.client.indices.exists(index=name))
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot check whether index {name!r} exists: {exc}") from exc

    def live_index(self) -> str | None:
        return self.documents.live_index()

    def search_knn(self, vector: Sequence[float], k: int, index: str | None = None) -> list[Hit]:
        return self.documents.search_knn(vector, k, index=index)


class ExactNeighbours:
    """`NeighbourIndex` of vectors held in memory, searched exactly by cosine similarity."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, name: str = "memory") -> None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.ids = list(ids)
        self.vectors = vectors / np.maximum(norms, 1e-12)  # (N, D)
        self.name = name

    @property
    def alias(self) -> str:
        return self.name

    def index_exists(self, name: str) -> bool:
        return name == self.name

    def live_index(self) -> str | None:
        return self.name

    def search_knn(self, vector: Sequence[float], k: int, index: str | None = None) -> list[Hit]:
        if index not in (None, self.name):
            raise DocumentIndexError(f"k-NN search in {index!r} failed: no such index")
        query = np.asarray(vector, dtype=np.float32)
        scores = self.vectors @ (query / max(float(np.linalg.norm(query)), 1e-12))  # (N,)
        top = np.argsort(-scores)[:k]
        return [Hit(self.ids[i], float(scores[i]), self.name) for i in top]

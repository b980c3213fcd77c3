"""A round's negatives mined from the live index (`tuner.ann_mining`), on a fake k-NN index:
what is mined, within which bounds, reported how, and the round that cannot mine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tuner import progress
from tuner.ann_mining import mining_index, with_mined_negatives
from tuner.config import NegativeSource, TrainSettings, TunerSettings
from tuner.errors import TrainConfigError
from tuner.iteration import IterationContext, run_training_iteration
from tuner.model_kinds import DocFields
from tuner.negatives import ExactNeighbours
from tuner.pairs import TrainingPair
from tuner.start_point import StartPoint

DOC_IDS = ["a", "b", "c", "d", "e", "f"]
DOC_VECTORS = np.array(  # a, b, c near (1, 0); d, e, f near (0, 1)
    [[1, 0], [0.95, 0.05], [0.9, 0.1], [0, 1], [0.05, 0.95], [0.1, 0.9]], dtype=np.float32
)
QUERY_VECTORS = {"drill": [1.0, 0.0], "saw": [0.0, 1.0]}
PAIRS = [  # "drill" rewarded a and c (two pairs), "saw" rewarded d
    TrainingPair("drill", "a", 1.0, ("x",)),
    TrainingPair("Drill ", "c", 2.0),
    TrainingPair("saw", "d", 1.0),
]


class RecordingIndex(ExactNeighbours):
    """The live index, exact, remembering every k-NN search: (k, index searched)."""

    def __init__(self, live: str | None = "docs__v1__1") -> None:
        super().__init__(DOC_IDS, DOC_VECTORS, name=live or "docs__v1__1")
        self.live = live
        self.searches: list[tuple[int, str | None]] = []

    @property
    def alias(self) -> str:
        return "docs"

    def live_index(self) -> str | None:
        return self.live

    def search_knn(self, vector: Sequence[float], k: int, index: str | None = None) -> list[Any]:
        self.searches.append((k, index))
        return super().search_knn(vector, k, index)


class QueryEmbedKind:
    """A model kind whose model embeds the two queries by table; documents by id."""

    def __init__(self) -> None:
        self.embedded: list[list[str]] = []

    def embedder(self, model: Any) -> Any:
        def embed(texts: Sequence[str]) -> np.ndarray:
            self.embedded.append(list(texts))
            return np.array([QUERY_VECTORS[t.strip().lower()] for t in texts], dtype=np.float32)

        return embed

    def documents(self, source: Any, ids: Sequence[str], fields: DocFields) -> dict[str, Any]:
        found: Mapping[str, Mapping[str, Any]] = source.get_documents(list(ids))
        return {d: doc["title"] for d, doc in found.items()}


class Docs:
    def get_documents(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return {d: {"title": f"doc {d}"} for d in ids if d in DOC_IDS}


@dataclass(frozen=True)
class Round:
    pairs: list[TrainingPair]
    doc_texts: dict[str, Any] = field(default_factory=lambda: {"a": "doc a", "c": "doc c"})


def mine(index: RecordingIndex, settings: TrainSettings, notes: list[str] | None = None) -> Any:
    kind = QueryEmbedKind()
    start = StartPoint(model=object(), parent=None, base_model="m", source="live", kind=kind)  # type: ignore[arg-type]
    context = IterationContext(None, None, None, Docs(), ["title"], neighbours=index)  # type: ignore[arg-type]
    name = mining_index(index, settings)
    notify = (notes if notes is not None else []).append
    return with_mined_negatives(Round(list(PAIRS)), start, context, settings, name, notify), kind  # type: ignore[arg-type]


def ann(**update: Any) -> TrainSettings:
    return TrainSettings(negatives=NegativeSource.ann_mined, **update)


def test_mined_negatives_are_the_live_neighbours_no_session_of_the_query_rewarded() -> None:
    index, notes = RecordingIndex(), list[str]()
    mined, _ = mine(index, ann(ann_depth=4), notes)
    # nearest to "drill": a, b, c, f; a and c rewarded. To "saw": d, e, f, c; d rewarded
    assert [p.hard_negative_ids for p in mined.pairs] == [("b", "f"), ("b", "f"), ("e", "f", "c")]
    assert [p.weight for p in mined.pairs] == [1.0, 2.0, 1.0]
    assert index.searches == [(4, "docs__v1__1"), (4, "docs__v1__1")]  # the live index, depth
    assert mined.doc_texts == {d: f"doc {d}" for d in "abcef"}  # the negatives' texts joined
    [line] = notes
    assert "ann_mined: 4 negatives for 2 of 2 queries searched" in line
    assert "'docs__v1__1' at depth 4" in line


def test_mining_searches_at_most_ann_max_queries_those_with_the_most_pairs() -> None:
    index = RecordingIndex()
    mined, kind = mine(index, ann(ann_depth=3, ann_max_queries=1))
    assert kind.embedded == [["drill"]]  # two pairs beat one
    assert index.searches == [(3, "docs__v1__1")]
    assert [p.hard_negative_ids for p in mined.pairs] == [("b",), ("b",), ()]


def test_mining_reports_its_progress_as_a_stage() -> None:
    lines: list[str] = []
    with progress.reporting(progress.ProgressLog(say=lines.append, interval_s=0.0)):
        mine(RecordingIndex(), ann())
    assert lines[0].startswith("stage=ann_mining") and "started" in lines[0]
    assert "query=2/2" in lines[-1] and "done in" in lines[-1]


def test_a_round_that_does_not_mine_is_left_alone() -> None:
    index = RecordingIndex()
    mined, _ = mine(index, TrainSettings(negatives=NegativeSource.skip_above))
    assert mined.pairs == PAIRS and index.searches == []


def test_a_missing_live_index_fails_naming_the_alias_and_the_rule() -> None:
    with pytest.raises(TrainConfigError, match=r"alias 'docs', which points at no index"):
        mining_index(RecordingIndex(live=None), ann())
    with pytest.raises(TrainConfigError, match=r"ann_index 'nope' does not exist"):
        mining_index(RecordingIndex(), ann(ann_index="nope"))
    with pytest.raises(TrainConfigError, match=r"'ann_mined' mines a k-NN index.*given none"):
        mining_index(None, ann())


class Untouchable:
    """Anything the round reads before it trains: touching it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read {name!r} before the mining index was checked")


def test_the_iteration_fails_on_a_missing_live_index_before_it_reads_a_session() -> None:
    never = Untouchable()
    context = IterationContext(
        never,  # type: ignore[arg-type]
        never,  # type: ignore[arg-type]
        never,  # type: ignore[arg-type]
        never,  # type: ignore[arg-type]
        ["title"],
        neighbours=RecordingIndex(live=None),
    )
    settings = TunerSettings(train=ann())
    with pytest.raises(TrainConfigError, match=r"points at no index"):
        run_training_iteration(never, context, settings)  # type: ignore[arg-type]

"""Negatives as a choice (`train.negatives`) and the configurations that cannot train."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tests.unit.tuner.tuner_fakes import session
from tuner.config import NegativeSource, TrainSettings
from tuner.errors import TrainConfigError
from tuner.negatives import ExactNeighbours, mine_negatives, resolve_mining_index
from tuner.pairs import TrainingPair, build_pairs
from tuner.propensity import PowerLawPropensity
from tuner.train import check_trainable, run_length

WEIGHTS = {"click": 1.0, "purchase": 5.0}
P = PowerLawPropensity(eta=1.0)
HITS = ["a", "b", "c", "d", "e"]
SESSIONS = [
    session("drill", HITS, ("d", "click")),
    session("drill", HITS, ("b", "purchase")),  # b: a positive of "drill", never a negative
]


def negatives(source: NegativeSource) -> list[tuple[str, tuple[str, ...], tuple[float, ...]]]:
    pairs = build_pairs(SESSIONS, WEIGHTS, P, 10.0, negatives=source)
    return [(p.positive_id, p.hard_negative_ids, p.negative_weights) for p in pairs]


def test_skip_above_is_todays_nearest_skip_first() -> None:
    assert negatives(NegativeSource.skip_above) == [("d", ("c", "a"), ()), ("b", ("a",), ())]


def test_skip_above_examined_weighs_each_skip_by_its_examination_probability() -> None:
    # c at rank 2 was seen with p = 1/3, a at rank 0 with p = 1
    assert negatives(NegativeSource.skip_above_examined) == [
        ("d", ("c", "a"), (pytest.approx(1 / 3), 1.0)),
        ("b", ("a",), (1.0,)),
    ]


def test_top_skipped_is_the_sessions_first_hit_without_an_outcome() -> None:
    clicked_top = session("saw", HITS, ("a", "click"))  # nothing above: the top skip is below
    pairs = build_pairs(
        [*SESSIONS, clicked_top], WEIGHTS, P, 10.0, negatives=NegativeSource.top_skipped
    )
    assert [(p.positive_id, p.hard_negative_ids) for p in pairs] == [
        ("d", ("a",)),
        ("b", ("a",)),
        ("a", ("b",)),
    ]


def test_a_choice_given_as_a_string_is_the_same_choice() -> None:
    """`model_copy(update=...)` does not validate: "top_skipped" must not train as none."""
    pairs = build_pairs(SESSIONS, WEIGHTS, P, 10.0, negatives="top_skipped")  # type: ignore[arg-type]
    assert [p.hard_negative_ids for p in pairs] == [("a",), ("a",)]
    with pytest.raises(ValueError, match="hardest"):
        build_pairs(SESSIONS, WEIGHTS, P, 10.0, negatives="hardest")  # type: ignore[arg-type]


def test_none_and_ann_mined_take_no_negatives_from_the_session() -> None:
    for source in (NegativeSource.none, NegativeSource.ann_mined):
        assert all(ids == () for _, ids, _ in negatives(source))


def test_ann_mined_negatives_are_neighbours_no_session_of_the_query_rewarded() -> None:
    ids = ["a", "b", "c", "d", "e"]
    vectors = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.7, 0.3]], dtype=np.float32)
    index = ExactNeighbours(ids, vectors)
    pairs = [TrainingPair("Drill", "a", 1.0, ("x",)), TrainingPair("drill ", "c", 2.0)]
    mined = mine_negatives(
        pairs, lambda texts: np.array([[1.0, 0.0]] * len(texts)), index, "memory", 4
    )
    # nearest to (1, 0): a, b, c, e; a and c were rewarded for the query key "drill"
    assert [p.hard_negative_ids for p in mined] == [("b", "e"), ("b", "e")]
    assert [p.weight for p in mined] == [1.0, 2.0]


def test_a_mining_index_that_does_not_exist_fails_naming_it_and_the_rule() -> None:
    index = ExactNeighbours(["a"], np.ones((1, 2), dtype=np.float32), name="docs__v1__1")
    settings = TrainSettings(negatives=NegativeSource.ann_mined, ann_index="docs__v9__1")
    with pytest.raises(
        TrainConfigError,
        match=r"ann_index 'docs__v9__1' does not exist.*must name an existing index",
    ):
        resolve_mining_index(index, settings, "docs")
    live = TrainSettings(negatives=NegativeSource.ann_mined)
    assert resolve_mining_index(index, live, "docs") == "docs__v1__1"


def test_a_batch_larger_than_the_pairs_trains_smaller_batches_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round with fewer pairs than a batch still trains (a small round must not fail the
    loop), in batches of all its pairs, with a warning naming both numbers."""
    pairs = [TrainingPair("q", "a", 1.0)] * 3
    check_trainable(pairs, TrainSettings(batch_size=4))
    with caplog.at_level("WARNING", logger="tuner.train"):
        assert run_length(TrainSettings(batch_size=4, max_steps=2), len(pairs)) == (3, 2)
    assert "batch_size 4 is larger than the 3 usable training pairs" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tuner.train"):
        assert run_length(TrainSettings(batch_size=3, max_steps=2), len(pairs)) == (3, 2)
    assert caplog.text == ""


def test_ann_mined_without_mined_negatives_fails_before_training() -> None:
    pairs = [TrainingPair("q", "a", 1.0)] * 4
    with pytest.raises(TrainConfigError, match=r"negatives 'ann_mined' needs negatives mined"):
        check_trainable(pairs, TrainSettings(batch_size=2, negatives=NegativeSource.ann_mined))


def test_a_mini_batch_larger_than_the_batch_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"mini_batch_size 64 is larger than batch_size 32"):
        TrainSettings(batch_size=32, mini_batch_size=64)
    assert TrainSettings(batch_size=32, mini_batch_size=32).mini_batch_size == 32

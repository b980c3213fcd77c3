"""Result randomisation shuffles only the top `depth` hits of about `fraction` of searches."""

from __future__ import annotations

import random

from serving.config import RandomizationSettings
from serving.randomize import ResultRandomizer

HITS = [f"d{i}" for i in range(15)]


def test_off_by_default_keeps_every_order() -> None:
    randomize = ResultRandomizer(RandomizationSettings())
    assert all(randomize(HITS) == (HITS, None) for _ in range(200))


def test_a_shuffle_permutes_the_top_and_keeps_the_tail() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=1.0, depth=10), random.Random(1))
    seen_first = set()
    for _ in range(200):
        hits, label = randomize(HITS)
        assert label == "shuffle_top_10"
        assert sorted(hits[:10]) == sorted(HITS[:10]) and hits[10:] == HITS[10:]
        seen_first.add(hits[0])
    assert len(seen_first) == 10  # every top hit reaches rank 0 at some point


def test_about_fraction_of_searches_are_shuffled() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=0.2), random.Random(7))
    shuffled = sum(randomize(HITS)[1] is not None for _ in range(5000))
    assert 900 < shuffled < 1100


def test_fewer_than_two_hits_are_never_marked() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=1.0), random.Random(0))
    assert randomize(["only"]) == (["only"], None) and randomize([]) == ([], None)

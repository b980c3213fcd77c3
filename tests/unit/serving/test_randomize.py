"""Result randomisation shuffles the top `depth` hits of about `fraction` of searches."""

from __future__ import annotations

import random

from serving.config import RandomizationSettings
from serving.rollout.randomize import ResultRandomizer

HITS = [f"d{i}" for i in range(25)]


def test_off_by_default_never_draws() -> None:
    randomize = ResultRandomizer(RandomizationSettings())
    assert all(randomize.draw(10) is None for _ in range(200))


def test_a_shuffle_permutes_the_top_and_keeps_the_tail() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=1.0, depth=10), random.Random(1))
    seen_first = set()
    for _ in range(200):
        fetch = randomize.draw(15)
        assert fetch == 15  # depth below k: fetch the k shown, shuffle their top 10
        hits, label = randomize.shuffle(HITS[:fetch], 15)
        assert label == "shuffle_top_10"
        assert sorted(hits[:10]) == sorted(HITS[:10]) and hits[10:] == HITS[10:15]
        seen_first.add(hits[0])
    assert len(seen_first) == 10  # every top hit reaches rank 0 at some point


def test_a_depth_beyond_k_fetches_deeper_and_shows_k_from_the_whole_depth() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=1.0, depth=20), random.Random(2))
    shown: set[str] = set()
    for _ in range(300):
        fetch = randomize.draw(10)
        assert fetch == 20
        hits, label = randomize.shuffle(HITS[:fetch], 10)
        assert label == "shuffle_top_20" and len(hits) == 10 and len(set(hits)) == 10
        assert set(hits) <= set(HITS[:20])
        shown.update(hits)
    assert shown == set(HITS[:20])  # ranks 11-20 get shown too: exploration below the page


def test_about_fraction_of_searches_are_shuffled() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=0.2), random.Random(7))
    shuffled = sum(randomize.draw(10) is not None for _ in range(5000))
    assert 900 < shuffled < 1100


def test_fewer_than_two_hits_are_never_marked() -> None:
    randomize = ResultRandomizer(RandomizationSettings(fraction=1.0), random.Random(0))
    assert randomize.shuffle(["only"], 10) == (["only"], None)
    assert randomize.shuffle([], 10) == ([], None)

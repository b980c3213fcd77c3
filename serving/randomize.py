"""Result randomisation: shuffle the top hits of a small share of searches.

Clicks on a fixed ranking cannot tell "looked at because it was first" from "clicked because it
was good": every document sits at one rank per query. Shuffling the top `depth` hits of a
`fraction` of searches shows the same documents at several ranks, which is what the tuner's
position-based click model (tuner/propensity.py) needs to estimate examination propensities
(Wang et al., "Estimating Position Bias without Intrusive Interventions", WSDM 2018, use the same
variation; a uniform shuffle of the top-N is the "RandTop-N" intervention of Joachims et al.,
WSDM 2017). The cost is a worse ranking for that share of searches, so it is off by default;
searches that were shuffled say so in their UBI record (`query_attributes.randomized`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from serving.config import RandomizationSettings

__all__ = ["ResultRandomizer"]

T = TypeVar("T")


class ResultRandomizer:
    """`randomizer(hits) -> (hits, label)`: label is None when the order was kept."""

    def __init__(self, settings: RandomizationSettings, rng: random.Random | None = None) -> None:
        self.fraction = settings.fraction
        self.depth = settings.depth
        self.label = f"shuffle_top_{settings.depth}"
        self._rng = rng or random.Random(settings.seed)

    def __call__(self, hits: Sequence[T]) -> tuple[list[T], str | None]:
        if self.fraction <= 0.0 or len(hits) < 2 or self._rng.random() >= self.fraction:
            return list(hits), None
        top = list(hits[: self.depth])
        self._rng.shuffle(top)
        return [*top, *hits[self.depth :]], self.label

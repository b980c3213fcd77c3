"""Result randomisation: shuffle the top hits of a small share of searches.

Clicks on a fixed ranking cannot tell "looked at because it was first" from "clicked because it
was good": every document sits at one rank per query. Shuffling the top `depth` hits of a
`fraction` of searches shows the same documents at several ranks, which is what the tuner's
position-based click model (tuner/propensity.py) needs to estimate examination propensities
(Wang et al., "Estimating Position Bias without Intrusive Interventions", WSDM 2018, use the same
variation; a uniform shuffle of the top-N is the "RandTop-N" intervention of Joachims et al.,
WSDM 2017). The cost is a worse ranking for that share of searches, so it is off by default;
searches that were shuffled say so in their UBI record (`query_attributes.randomized`).

A `depth` larger than the `k` hits a search shows is exploration as well: such a search fetches
`depth` hits, shuffles them and shows the first `k`, so documents ranked just below the page get
shown, and clicked, at all. Without that, clicks can only re-order what the live model already
puts on the page, and a model that would pull a relevant document up from rank 15 never earns
the evidence for it.

Use: `fetch = randomizer.draw(k)` before the search (None: this one is not shuffled; else fetch
that many hits), then `randomizer.shuffle(hits, k)` on what was fetched.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from serving.config import RandomizationSettings

__all__ = ["ResultRandomizer"]

T = TypeVar("T")


class ResultRandomizer:
    """Decides which searches are shuffled (`draw`) and shuffles them (`shuffle`)."""

    def __init__(self, settings: RandomizationSettings, rng: random.Random | None = None) -> None:
        self.fraction = settings.fraction
        self.depth = settings.depth
        self.label = f"shuffle_top_{settings.depth}"
        self._rng = rng or random.Random(settings.seed)

    def draw(self, k: int) -> int | None:
        """None if the search showing `k` hits keeps its order; else how many hits to fetch."""
        if self.fraction <= 0.0 or self._rng.random() >= self.fraction:
            return None
        return max(k, self.depth)

    def shuffle(self, hits: Sequence[T], k: int) -> tuple[list[T], str | None]:
        """The `k` hits to show after shuffling the top `depth`; label None if nothing moved."""
        if len(hits) < 2:
            return list(hits[:k]), None
        top = list(hits[: self.depth])
        self._rng.shuffle(top)
        return [*top, *hits[self.depth :]][:k], self.label

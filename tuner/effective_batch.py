"""How many pairs a weighted batch is worth: the Kish effective sample size of its weights.

    ESS = (sum_i w_i)^2 / sum_i w_i^2

B for B equal weights, 1 when one pair carries all the weight. The weighted loss
(`tuner.losses.weighted_infonce`) normalises by sum w, so a batch of 32 with ESS 2.6 moves the
model about as much as 2.6 equally weighted pairs do, with the noise of so few. Reference: Kish,
"Survey Sampling" (1965).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from tuner.pairs import TrainingPair

__all__ = ["EffectiveBatches", "kish"]

log = logging.getLogger(__name__)


def kish(weights: Iterable[float]) -> float:
    """(sum w)^2 / sum w^2 of non-negative `weights`; 0.0 when they are all 0 (or none)."""
    values = list(weights)
    squares = sum(w * w for w in values)
    return sum(values) ** 2 / squares if squares > 0 else 0.0


class EffectiveBatches:
    """Records the Kish effective size of every batch that passes through `track`."""

    def __init__(self) -> None:
        self.sizes: list[float] = []

    def track(self, batches: Iterable[Sequence[TrainingPair]]) -> Iterator[Sequence[TrainingPair]]:
        for batch in batches:
            self.sizes.append(kish(p.weight for p in batch))
            yield batch

    def mean(self) -> float | None:
        """The mean effective batch size per step (None before any batch)."""
        return round(sum(self.sizes) / len(self.sizes), 3) if self.sizes else None

    def report(self, batch_size: int) -> None:
        """One log line: the mean and the smallest effective batch size per step."""
        if self.sizes:
            log.info(
                "effective batch (Kish, (sum w)^2 / sum w^2): mean %.2f, min %.2f of %d pairs "
                "per step over %d steps",
                sum(self.sizes) / len(self.sizes),
                min(self.sizes),
                batch_size,
                len(self.sizes),
            )

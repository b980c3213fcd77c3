"""Position bias: how likely a user is to look at the hit shown at a rank.

A click at rank 5 is stronger evidence than a click at rank 0, because few users look that far.
Positives are weighted by the clipped inverse examination propensity 1/p(k) (Joachims et al.,
"Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017). Today p(k) is a configured power
law; an estimate from the data (a position-based click model fitted with EM) plugs in through the
same `Propensity` seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tuner.config import TunerSettings

__all__ = ["PowerLawPropensity", "Propensity", "clipped_inverse_propensity", "from_settings"]


class Propensity(Protocol):
    """Examination probability p(k) in (0, 1] of the hit shown at 0-based rank k."""

    def __call__(self, rank: int) -> float: ...


@dataclass(frozen=True)
class PowerLawPropensity:
    """p(k) = (1 / (k + 1)) ** eta; eta = 0 means no position bias, 1 the classic 1/rank."""

    eta: float = 1.0

    def __call__(self, rank: int) -> float:
        if rank < 0:
            raise ValueError(f"rank {rank} must be >= 0 (ranks are 0-based)")
        return float((1.0 / (rank + 1)) ** self.eta)


def clipped_inverse_propensity(propensity: Propensity, rank: int, max_ipw: float) -> float:
    """min(1 / p(rank), max_ipw): the clip keeps rare deep clicks from dominating the loss."""
    p = propensity(rank)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"propensity p({rank}) = {p} must lie in (0, 1]")
    return min(1.0 / p, max_ipw)


def from_settings(settings: TunerSettings) -> Propensity:
    """The propensity model the settings ask for (today always the power law)."""
    return PowerLawPropensity(eta=settings.propensity_eta)

"""Which candidate of an iteration deploys: a query-side one (no reindex) or a full one.

A worker iteration may train a query-side candidate (a query adapter over the live index's
frozen document encoder, deployed by moving the registry alias alone), a full one (every
document re-embedded before it serves), or both (`tuner.worker.candidates`). With both, each is
gated against the live model on the same confirm queries, and

    only one passed the gate                        -> that one
    both passed, gain_full - gain_query > margin    -> full   (its extra gain pays its reindex)
    both passed, otherwise                          -> query  (the cheaper deploy)

where gain = candidate - live on `gate.primary_metric` (the confirm part's point estimates the
gate read) and margin = `tuner.worker.reindex_margin`. The choice and its reason are stored on
the task (`metrics.choice`) beside every candidate's figures (`metrics.candidates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuner.config import Candidates, TrainMethod, TunerSettings
from tuner.errors import TrainConfigError

__all__ = [
    "FULL",
    "QUERY",
    "CandidateChoice",
    "GatedCandidate",
    "candidate_methods",
    "choose_candidate",
    "is_query_side",
]

QUERY = "query"
FULL = "full"
_QUERY_METHODS = frozenset({TrainMethod.query_adapter, TrainMethod.query_tower})


def is_query_side(method: TrainMethod) -> bool:
    """Whether `method` trains a query model over a frozen document encoder (no reindex)."""
    return method in _QUERY_METHODS


def candidate_methods(settings: TunerSettings) -> dict[str, TrainMethod]:
    """The training method of each side this iteration trains, full side first.

    The full side trains with `train.method` (full or lora); the query side with it when it is a
    query-side method, else query_adapter. Without `worker.candidates`, one side: the one
    `train.method` names."""
    method = settings.train.method
    wanted = settings.worker.candidates
    if wanted is None:
        return {QUERY if is_query_side(method) else FULL: method}
    if wanted in (Candidates.full, Candidates.both) and is_query_side(method):
        raise TrainConfigError(
            f"tuner.worker.candidates {wanted.value} trains a full candidate with "
            f"tuner.train.method, which is {method.value!r} (query-side): set train.method to "
            f"full or lora, or candidates to query"
        )
    query = method if is_query_side(method) else TrainMethod.query_adapter
    sides = {
        Candidates.full: {FULL: method},
        Candidates.query: {QUERY: query},
        Candidates.both: {FULL: method, QUERY: query},
    }
    return sides[wanted]


@dataclass(frozen=True)
class GatedCandidate:
    """What the policy reads of one gated candidate."""

    side: str  # QUERY | FULL
    method: str
    passed: bool
    gain: float  # candidate - live on the primary metric, confirm part
    verdict: str  # the gate's: promote | online | reject | undecided
    reason: str  # the gate's

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CandidateChoice:
    """The side that deploys (None: none passed) and why, in words a task record shows."""

    side: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_candidate(
    candidates: Sequence[GatedCandidate], reindex_margin: float, metric: str
) -> CandidateChoice:
    """The candidate to deploy among the gated `candidates` (see the module doc)."""
    passed = {c.side: c for c in candidates if c.passed}
    failed = [c for c in candidates if not c.passed]
    if not passed:
        why = "; ".join(f"{c.side}: {c.reason}" for c in candidates)
        return CandidateChoice(None, f"no candidate passed the gate ({why})")
    if len(passed) == 1:
        [only] = passed.values()
        if not failed:
            return CandidateChoice(only.side, f"the only candidate ({only.method})")
        others = "; ".join(f"{c.side}: {c.reason}" for c in failed)
        return CandidateChoice(
            only.side,
            f"only the {only.side} candidate passed the gate ({metric} gain {only.gain:+.4f}); "
            f"{others}",
        )
    full, query = passed[FULL], passed[QUERY]
    extra = round(full.gain - query.gain, 9)  # 0.04 - 0.03 is not above a margin of 0.01
    figures = (
        f"{metric} gain full {full.gain:+.4f}, query-side {query.gain:+.4f}: the full one "
        f"gains {extra:+.4f} more"
    )
    if extra > reindex_margin:
        return CandidateChoice(
            FULL, f"{figures}, above reindex_margin {reindex_margin:g}: worth its reindex"
        )
    return CandidateChoice(
        QUERY,
        f"{figures}, not above reindex_margin {reindex_margin:g}: the query-side one deploys "
        "without a reindex",
    )

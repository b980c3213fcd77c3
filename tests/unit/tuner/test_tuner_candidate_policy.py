"""The deploy policy: the query-side candidate unless the full one's gain pays for its reindex."""

from __future__ import annotations

import pytest

from tuner.candidate_policy import (
    FULL,
    QUERY,
    GatedCandidate,
    candidate_methods,
    choose_candidate,
)
from tuner.config import Candidates, TrainMethod, TrainSettings, TunerSettings, WorkerSettings
from tuner.errors import TrainConfigError

METRIC = "dr_dcg@10"


def gated(side: str, gain: float, passed: bool = True) -> GatedCandidate:
    method = "query_adapter" if side == QUERY else "full"
    reason = "passed" if passed else f"{side} below live"
    return GatedCandidate(side, method, passed, gain, "online" if passed else "reject", reason)


@pytest.mark.parametrize(
    ("full_gain", "query_gain", "margin", "side"),
    [
        (0.040, 0.035, 0.01, QUERY),  # 0.005 more: not worth a reindex
        (0.040, 0.030, 0.01, QUERY),  # exactly the margin is not above it
        (0.050, 0.030, 0.01, FULL),  # 0.02 more pays for the reindex
        (0.050, 0.030, 0.05, QUERY),  # ... unless the reindex costs more
        (0.020, 0.030, 0.00, QUERY),  # the query side gains more: never reindex for less
    ],
)
def test_both_passed_the_query_side_deploys_unless_the_full_gain_clears_the_margin(
    full_gain: float, query_gain: float, margin: float, side: str
) -> None:
    choice = choose_candidate([gated(FULL, full_gain), gated(QUERY, query_gain)], margin, METRIC)
    assert choice.side == side
    assert (
        f"full {full_gain:+.4f}" in choice.reason
        and f"query-side {query_gain:+.4f}" in choice.reason
    )
    assert f"reindex_margin {margin:g}" in choice.reason
    assert ("worth its reindex" in choice.reason) == (side == FULL)


def test_only_the_candidate_that_passed_deploys_whatever_its_gain() -> None:
    choice = choose_candidate([gated(FULL, 0.2, passed=False), gated(QUERY, 0.001)], 0.0, METRIC)
    assert choice.side == QUERY
    assert "only the query candidate passed" in choice.reason and "full below live" in choice.reason
    choice = choose_candidate([gated(FULL, 0.001), gated(QUERY, 0.2, passed=False)], 0.5, METRIC)
    assert choice.side == FULL


def test_none_passed_none_deploys_and_both_reasons_are_kept() -> None:
    choice = choose_candidate(
        [gated(FULL, -0.1, passed=False), gated(QUERY, -0.2, passed=False)], 0.01, METRIC
    )
    assert choice.side is None
    assert "full: full below live" in choice.reason and "query: query below live" in choice.reason


def test_a_single_candidate_is_chosen_alone() -> None:
    assert choose_candidate([gated(QUERY, 0.01)], 0.01, METRIC).side == QUERY


def settings(method: TrainMethod, candidates: Candidates | None) -> TunerSettings:
    return TunerSettings(
        train=TrainSettings(method=method), worker=WorkerSettings(candidates=candidates)
    )


def test_which_sides_an_iteration_trains() -> None:
    assert candidate_methods(settings(TrainMethod.full, None)) == {FULL: TrainMethod.full}
    assert candidate_methods(settings(TrainMethod.query_adapter, None)) == {
        QUERY: TrainMethod.query_adapter
    }
    assert candidate_methods(settings(TrainMethod.lora, Candidates.both)) == {
        FULL: TrainMethod.lora,
        QUERY: TrainMethod.query_adapter,
    }
    assert candidate_methods(settings(TrainMethod.full, Candidates.query)) == {
        QUERY: TrainMethod.query_adapter
    }
    with pytest.raises(TrainConfigError, match="candidates both.*'query_adapter'"):
        candidate_methods(settings(TrainMethod.query_adapter, Candidates.both))

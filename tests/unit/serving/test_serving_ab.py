"""A/B experiments without servers: sticky split, the store, intervals, the mSPRT and the policy."""

from __future__ import annotations

import random

import pytest

from serving.config import ABSettings
from serving.errors import ExperimentError
from serving.rollout.ab import (
    CANDIDATE,
    CONTROL,
    Arm,
    ArmHealth,
    ExperimentStore,
    assign,
    new_experiment,
)
from serving.rollout.ab_stats import (
    ArmMetrics,
    ExperimentMetrics,
    decide,
    msprt,
    tally,
    wilson,
)


def _experiment(traffic: float = 0.2, mode: str = "split"):  # type: ignore[no-untyped-def]
    return new_experiment(
        Arm(CONTROL, "v1", "docs"), Arm(CANDIDATE, "v2", "docs_candidate"), traffic, mode
    )


def test_assignment_is_sticky_and_splits_traffic_within_two_points() -> None:
    experiment = _experiment(0.2)
    clients = [f"client-{i}" for i in range(10_000)]
    first = [assign(experiment, c).name for c in clients]
    assert first == [assign(experiment, c).name for c in clients]  # same on every replica
    share = first.count(CANDIDATE) / len(clients)
    assert abs(share - 0.2) <= 0.02
    other = _experiment(0.2)  # a new salt reshuffles who is in which arm
    moved = sum(a != assign(other, c).name for a, c in zip(first, clients, strict=True))
    assert moved > 1000
    assert assign(experiment, None).name == CONTROL


def test_the_store_survives_a_restart_and_refuses_a_second_experiment(tmp_path) -> None:
    experiment = _experiment()
    ExperimentStore(tmp_path).save(experiment)
    again = ExperimentStore(tmp_path)  # another replica / a restart
    assert again.load() == experiment
    with pytest.raises(ExperimentError, match="already running"):
        again.save(_experiment())
    assert again.stop() == experiment and again.load() is None
    assert (tmp_path / "experiments" / f"{experiment.id}.json").is_file()
    with pytest.raises(ExperimentError, match="traffic"):
        _experiment(1.5)


def test_wilson_interval_covers_the_rate_and_narrows_with_data() -> None:
    low, high = wilson(30, 100)
    assert low < 0.3 < high and low > 0.2 and high < 0.41
    wide, narrow = wilson(3, 10), wilson(300, 1000)
    assert (wide[1] - wide[0]) > (narrow[1] - narrow[0])
    assert wilson(0, 0) == (0.0, 1.0)


def _metrics(ctr_a: float, ctr_b: float, n: int, seed: int = 0) -> ExperimentMetrics:
    rng = random.Random(seed)
    arms = {}
    for name, ctr in ((CONTROL, ctr_a), (CANDIDATE, ctr_b)):
        m = ArmMetrics(name, queries=n)
        m.clicked = sum(rng.random() < ctr for _ in range(n))
        m.reciprocal_ranks = [1.0] * m.clicked
        arms[name] = m
    return ExperimentMetrics(arms)


def test_policy_promotes_a_clearly_better_arm_and_rolls_back_a_worse_one() -> None:
    settings = ABSettings(min_queries=100)
    experiment = _experiment()
    assert decide(experiment, _metrics(0.30, 0.40, 3000), settings).action == "promote"
    assert decide(experiment, _metrics(0.40, 0.30, 3000), settings).action == "rollback"
    assert decide(experiment, _metrics(0.30, 0.30, 50), settings).action == "continue"


def test_repeated_looks_at_an_aa_test_rarely_decide() -> None:
    """Always valid: looking after every 100 queries keeps false decisions near alpha."""
    settings = ABSettings(min_queries=100, alpha=0.05)
    experiment = _experiment()
    false_decisions = 0
    for run in range(100):
        rng = random.Random(run)
        a, b = ArmMetrics(CONTROL), ArmMetrics(CANDIDATE)
        for _look in range(20):
            for arm in (a, b):
                arm.queries += 100
                arm.clicked += sum(rng.random() < 0.3 for _ in range(100))
            if (
                decide(experiment, ExperimentMetrics({CONTROL: a, CANDIDATE: b}), settings).action
                != "continue"
            ):
                false_decisions += 1
                break
    assert false_decisions <= 10  # alpha = 5 %; a fixed-horizon test looked at 20x gives ~25 %


def test_guards_roll_back_a_candidate_that_errors_or_is_slow() -> None:
    settings = ABSettings(min_requests_for_guard=10, max_error_rate=0.05, max_p99_ms=100)
    metrics = _metrics(0.3, 0.3, 10)
    metrics.health = {CANDIDATE: ArmHealth(requests=20, errors=5)}
    assert "error rate" in decide(_experiment(), metrics, settings).reason
    slow = ArmHealth()
    for _ in range(20):
        slow.observe(500.0)
    metrics.health = {CANDIDATE: slow}
    decision = decide(_experiment(), metrics, settings)
    assert decision.action == "rollback" and "p99" in decision.reason


def test_msprt_grows_with_evidence() -> None:
    assert msprt(0.0, 0.001, 0.05) < 1
    assert msprt(0.1, 0.0001, 0.05) > 20


def test_tally_joins_events_to_queries_by_arm() -> None:
    queries = [
        {
            "query_id": "q1",
            "query_attributes": {"arm": CONTROL},
            "query_response_hit_ids": ["a", "b"],
        },
        {
            "query_id": "q2",
            "query_attributes": {"arm": CANDIDATE},
            "query_response_hit_ids": ["a", "b"],
        },
        {"query_id": "q3", "query_attributes": {"arm": CANDIDATE}, "query_response_hit_ids": ["a"]},
    ]
    # the rank is the hit's place in the shown list; a 1-based ordinal does not move it
    click = {
        "action_name": "click",
        "event_attributes": {"object": {"object_id": "b"}, "position": {"ordinal": 2}},
    }
    events = {"q2": [click, {"action_name": "purchase", "event_attributes": {}}]}
    metrics = tally(queries, events)
    assert metrics.arms[CONTROL].queries == 1 and metrics.arms[CONTROL].ctr == 0
    candidate = metrics.arms[CANDIDATE]
    assert (candidate.queries, candidate.clicked, candidate.purchases) == (2, 1, 1)
    assert candidate.mrr == pytest.approx(0.25)  # (1/2 + 0) / 2


class _AskedIndex:
    """Records how many hits each search asked for; answers that many ranked hits."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def search_knn(self, vector, k: int, index: str | None = None):  # type: ignore[no-untyped-def]
        from serving.index.vector_index import Hit

        self.asked.append(k)
        return [Hit(f"d{i}", 1.0 - i / 100, index or "docs", {}) for i in range(k)]


@pytest.mark.parametrize(("mode", "asked"), [("split", [20]), ("interleave", [10, 10])])
def test_a_single_arm_fetches_the_shuffle_depth_and_an_interleave_only_k(
    mode: str, asked: list[int]
) -> None:
    from serving.encoders.encoder import HashingEncoder
    from serving.rollout.ab import ArmRouter

    encoder = HashingEncoder(dimension=8, version="v1")
    index = _AskedIndex()
    store = type("Store", (), {"load": lambda self: None})()
    router = ArmRouter(store, lambda version: HashingEncoder(8, version=version), index, seed=0)  # type: ignore[arg-type]
    routed = router.search(_experiment(0.2, mode), None, "q", 10, encoder, fetch=20)
    assert index.asked == asked
    assert len(routed.hits) == (20 if mode == "split" else 10)

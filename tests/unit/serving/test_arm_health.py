"""Per-arm health without servers: histogram quantiles, sums across replicas, the reporter, the
guards (error rate, p99, p99 against control), the router's counting and `/metrics`."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.config import ABSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import DocumentIndexError
from serving.rollout.ab import (
    CANDIDATE,
    CONTROL,
    Arm,
    ArmRouter,
    ExperimentStore,
    new_experiment,
)
from serving.rollout.ab_stats import guard
from serving.rollout.arm_health import (
    ArmHealth,
    HealthLedger,
    HealthReporter,
    InMemoryArmHealthStore,
)
from serving.state.query_log import InMemoryQueryLog
from tests.unit.serving.test_app import MemoryIndex

SETTINGS = ABSettings(min_requests_for_guard=50, max_error_rate=0.05, max_p99_ratio=3.0)


def _health(latencies: list[float], errors: int = 0) -> ArmHealth:
    health = ArmHealth()
    for i, ms in enumerate(latencies):
        health.observe(ms, failed=i < errors)
    return health


def test_histogram_quantiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(3)
    latencies = [rng.lognormvariate(3.0, 0.6) for _ in range(5000)]  # ~20 ms, a long tail
    health = _health(latencies)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        assert exact / 1.5 <= health.quantile_ms(q) <= exact * 1.5, q
    assert health.p95_ms < health.p99_ms


def test_replicas_add_up_exactly_and_survive_a_document_round_trip() -> None:
    a, b = _health([5.0] * 90 + [80.0] * 10, errors=3), _health([5.0] * 100)
    merged = ArmHealth.from_doc(a.merge(b).to_doc())
    assert merged == _health([5.0] * 90 + [80.0] * 10 + [5.0] * 100, errors=3)
    assert merged.requests == 200 and merged.error_rate == 3 / 200
    assert a.p99_ms > merged.p99_ms  # b's fast searches dilute a's tail


def test_reporters_of_two_replicas_are_summed_by_the_reader() -> None:
    store = InMemoryArmHealthStore()
    ledgers = [HealthLedger(), HealthLedger()]
    reporters = [HealthReporter(ledger, store, f"r{i}", 60) for i, ledger in enumerate(ledgers)]
    for i, ledger in enumerate(ledgers):
        for _ in range(10 * (i + 1)):
            ledger.record("exp1", CANDIDATE, 4.0, failed=i == 1)
        ledger.record("exp1", CONTROL, 4.0, failed=False)
    assert [r.flush() for r in reporters] == [1, 1]
    assert [r.flush() for r in reporters] == [0, 0]  # nothing new: nothing written again
    total = store.read("exp1")
    assert (total[CANDIDATE].requests, total[CANDIDATE].errors) == (30, 20)
    assert total[CONTROL].requests == 2 and store.read("other") == {}


def test_the_reporter_thread_writes_periodically_and_once_more_when_stopped() -> None:
    store, ledger = InMemoryArmHealthStore(), HealthLedger()
    reporter = HealthReporter(ledger, store, "r", 0.05)
    reporter.start()
    ledger.record("e", CANDIDATE, 1.0, failed=False)
    time.sleep(0.3)
    assert store.read("e")[CANDIDATE].requests == 1
    ledger.record("e", CANDIDATE, 1.0, failed=True)
    reporter.stop()
    assert store.read("e")[CANDIDATE].errors == 1


def test_guards_fire_on_errors_and_on_p99_against_control_only_with_enough_requests() -> None:
    fast, same = _health([10.0] * 100), _health([11.0] * 100)
    assert guard({CONTROL: fast, CANDIDATE: same}, SETTINGS) is None
    slow = _health([10.0] * 90 + [60.0] * 10)
    reason = guard({CONTROL: fast, CANDIDATE: slow}, SETTINGS)
    assert reason is not None and "max_p99_ratio=3.0" in reason
    assert guard({CONTROL: _health([10.0] * 49), CANDIDATE: slow}, SETTINGS) is None
    failing = _health([10.0] * 100, errors=6)
    reason = guard({CONTROL: fast, CANDIDATE: failing}, SETTINGS)
    assert reason is not None and "6 of 100" in reason and "max_error_rate" in reason
    assert guard({CANDIDATE: _health([10.0] * 49, errors=49)}, SETTINGS) is None
    too_slow = SETTINGS.model_copy(update={"max_p99_ms": 50.0})
    reason = guard({CANDIDATE: slow}, too_slow)
    assert reason is not None and "max_p99_ms=50.0" in reason


class _BrokenCandidate(MemoryIndex):
    def search_knn(self, vector, k, index=None):  # type: ignore[no-untyped-def]
        if index == "docs_candidate":
            raise DocumentIndexError("no such index [docs_candidate]")
        return super().search_knn(vector, k, index)


def _app(tmp_path: Path, index: MemoryIndex, load_s: float = 0.0):  # type: ignore[no-untyped-def]
    encoder = HashingEncoder(32, "v1")
    store = ExperimentStore(tmp_path)
    store.save(
        new_experiment(
            Arm(CONTROL, "v1", "docs"), Arm(CANDIDATE, "v2", "docs_candidate"), 0.5, "split"
        )
    )

    def encoder_for(version: str) -> HashingEncoder:
        time.sleep(load_s)  # loading a model is not part of an arm's search latency
        return HashingEncoder(32, version)

    arms = ArmRouter(store, encoder_for, index)
    app = create_app(ModelSlot(encoder), index, InMemoryQueryLog(), ServingSettings(), arms=arms)
    return TestClient(app, raise_server_exceptions=False), arms


def test_the_router_counts_a_failing_arm_and_metrics_show_it_by_arm(tmp_path: Path) -> None:
    api, arms = _app(tmp_path, _BrokenCandidate(HashingEncoder(32, "v1")))
    answers = [
        api.post("/v1/search", json={"query": "wing", "client_id": f"c{i}"}) for i in range(40)
    ]
    failed = sum(a.status_code == 503 for a in answers)
    assert 0 < failed < 40
    health = arms.health
    assert health[CANDIDATE].errors == health[CANDIDATE].requests == failed
    assert health[CONTROL].errors == 0 and health[CONTROL].requests == 40 - failed
    experiment = arms.experiment().id  # type: ignore[union-attr]
    text = api.get("/metrics").text
    assert (
        f'clicktune_arm_errors_total{{arm="candidate",experiment="{experiment}"}} {failed}.0'
        in text
    )
    assert f'clicktune_arm_search_seconds_count{{arm="control",experiment="{experiment}"}}' in text


def test_loading_the_candidate_model_is_not_counted_as_its_latency(tmp_path: Path) -> None:
    api, arms = _app(tmp_path, MemoryIndex(HashingEncoder(32, "v1")), load_s=0.1)
    for i in range(20):
        assert api.post("/v1/search", json={"query": "wing", "client_id": f"c{i}"}).is_success
    assert arms.health[CANDIDATE].requests > 0
    assert arms.health[CANDIDATE].p99_ms < 100

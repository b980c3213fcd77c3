"""The worker's A/B stage stops a candidate whose replicas report a broken guard, before (and
without) reading any UBI data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.config import ABSettings
from serving.errors import ExperimentError
from serving.rollout.ab import CANDIDATE, CONTROL, Arm, ExperimentStore, new_experiment
from serving.rollout.arm_health import HealthLedger, HealthReporter, InMemoryArmHealthStore
from tuner.worker.stages import LoopStages


class _NoUbi:
    """An OpenSearch client that must not be asked: a guard decides without the UBI indexes."""

    def search(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the UBI indexes were read although a guard had broken")


def _stages(tmp_path: Path, health: InMemoryArmHealthStore) -> tuple[LoopStages, str]:
    experiments = ExperimentStore(tmp_path)
    experiment = new_experiment(
        Arm(CONTROL, "v1", "docs"), Arm(CANDIDATE, "v2", "docs_candidate"), 0.5, "split"
    )
    experiments.save(experiment)
    stages = LoopStages(
        context=None,  # type: ignore[arg-type]
        settings=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        doc_index=None,  # type: ignore[arg-type]
        checkpoints=tmp_path,
        reindexers=None,  # type: ignore[arg-type]
        experiments=experiments,
        ab_settings=ABSettings(min_requests_for_guard=20, max_error_rate=0.1),
        client=_NoUbi(),  # type: ignore[arg-type]
        ubi_indexes=("q", "e"),
        arm_health=health,
    )
    return stages, experiment.id


def test_a_candidate_failing_on_two_replicas_is_rolled_back_with_the_summed_counts(
    tmp_path: Path,
) -> None:
    store = InMemoryArmHealthStore()
    stages, experiment = _stages(tmp_path, store)
    for replica, failures in (("r1", 0), ("r2", 6)):
        ledger = HealthLedger()
        for i in range(25):
            ledger.record(experiment, CANDIDATE, 5.0, failed=i < failures)
            ledger.record(experiment, CONTROL, 5.0, failed=False)
        HealthReporter(ledger, store, replica, 60).flush()
    action, reason, _ = stages.ab_decision(started_at=0.0, max_s=1e12)
    assert action == "rollback"
    assert reason.startswith("guard: ") and "6 of 50 searches failed" in reason


class _UnreadableHealth(InMemoryArmHealthStore):
    """A health index whose shard has not started yet: every read fails."""

    def read(self, experiment: str) -> dict:
        raise ExperimentError("cannot read arm health from 'x_arm_health': TransportError(503)")


def test_unreadable_arm_health_keeps_the_experiment_running_until_ab_max_s(
    tmp_path: Path,
) -> None:
    stages, _ = _stages(tmp_path, _UnreadableHealth())
    stages.clock = lambda: 100.0
    action, reason, _ = stages.ab_decision(started_at=50.0, max_s=600.0)
    assert action == "continue" and "503" in reason  # the UBI indexes were not read either
    action, reason, _ = stages.ab_decision(started_at=-900.0, max_s=600.0)
    assert action == "rollback" and "ab_max_s" in reason

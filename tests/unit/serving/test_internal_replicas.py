"""Replicas of clicktune's own indexes (tasks, lease, arm health): opensearch.internal_replicas."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clicktune.config import ConfigError, Settings, load_settings
from serving.rollout.arm_health import ArmHealth, OpenSearchArmHealthStore
from serving.state.tasks import OpenSearchTaskStore
from tests.unit.serving.task_fakes import FakeOpenSearch


class ArmHealthClient(FakeOpenSearch):
    def index(self, index: str, id: str, body: dict, **params: Any) -> dict:  # type: ignore[override]
        return super().index(index, id, body)


def _settings_of(client: FakeOpenSearch, index: str) -> dict[str, Any]:
    return client.indices.bodies[index]["settings"]


def test_internal_indexes_default_to_auto_expand_0_1() -> None:
    client = FakeOpenSearch()
    OpenSearchTaskStore(client, "tasks").ensure_index()  # type: ignore[arg-type]
    assert _settings_of(client, "tasks") == {"auto_expand_replicas": "0-1"}
    assert Settings().opensearch.internal_replicas == "0-1"


def test_the_task_store_creates_its_index_with_the_configured_replicas() -> None:
    client = FakeOpenSearch()
    OpenSearchTaskStore(client, "tasks", 1).ensure_index()  # type: ignore[arg-type]
    assert _settings_of(client, "tasks") == {"number_of_replicas": 1}


def test_the_arm_health_store_creates_its_index_with_the_configured_replicas() -> None:
    client = ArmHealthClient()
    store = OpenSearchArmHealthStore(client, "health", "0-all")  # type: ignore[arg-type]
    store.write("replica-1", "exp", {"a": ArmHealth()})
    assert _settings_of(client, "health") == {"auto_expand_replicas": "0-all"}


def test_serve_and_the_tuner_worker_pass_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from clicktune.cli.serve import _health_reporter
    from clicktune.cli.tuner import _create_lease_index

    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__INTERNAL_REPLICAS", "2")
    settings = load_settings()
    assert settings.opensearch.internal_replicas == 2
    reporter = _health_reporter(settings, FakeOpenSearch(), SimpleNamespace(ledger=None))
    assert reporter.store.replicas == 2
    client = FakeOpenSearch()
    _create_lease_index(client, "tasks-lease", settings.opensearch.internal_replicas)
    assert _settings_of(client, "tasks-lease") == {"number_of_replicas": 2}


def test_bad_internal_replicas_are_refused_naming_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__INTERNAL_REPLICAS", "1-0")
    with pytest.raises(ConfigError, match="'1-0' must be a count"):
        load_settings()

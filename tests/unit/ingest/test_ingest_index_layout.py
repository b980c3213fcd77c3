"""Shards, replicas and ISM rollover of the UBI index templates (ingest.index_layout, templates)."""

from __future__ import annotations

from typing import Any

import pytest
from opensearchpy.exceptions import NotFoundError
from pydantic import ValidationError

from clicktune.config import Settings
from ingest.errors import SetupError
from ingest.index_layout import RolloverSettings, UbiIndexSettings, replica_settings
from ingest.templates import (
    events_template,
    install_templates,
    policy_id,
    queries_template,
    rollover_policy,
    template_name,
)

ROLLOVER = UbiIndexSettings(
    shards=2,
    replicas=1,
    rollover=RolloverSettings(enabled=True, min_doc_count=1000, delete_after="90d"),
)


class FakeCat:
    def __init__(self, plugins: tuple[str, ...]) -> None:
        self.names = plugins

    def plugins(self, format: str) -> list[dict[str, str]]:
        return [{"component": name} for name in self.names]


class FakeCluster:
    """The calls `install_templates` makes, over dicts: templates, ISM policies, indexes."""

    def __init__(self, plugins: tuple[str, ...] = ("opensearch-index-management",)) -> None:
        self.templates: dict[str, Any] = {}
        self.policies: dict[str, Any] = {}
        self.indexes: dict[str, Any] = {}
        self.writes: list[str] = []
        self.cat = FakeCat(plugins)
        self.indices = self
        self.transport = self

    # indices
    def put_index_template(self, name: str, body: Any) -> None:
        self.templates[name] = body

    def exists_alias(self, name: str) -> bool:
        return any(name in body.get("aliases", {}) for body in self.indexes.values())

    def exists(self, index: str) -> bool:
        return index in self.indexes

    def create(self, index: str, body: Any, params: Any = None) -> None:
        self.writes.append(f"create {index}")
        self.indexes[index] = body

    # transport
    def perform_request(self, method: str, path: str, params: Any = None, body: Any = None) -> Any:
        name = path.rsplit("/", 1)[-1]
        if method == "GET":
            if name not in self.policies:
                raise NotFoundError(404, "not found", {})
            return {"_seq_no": 3, "_primary_term": 1, "policy": self.policies[name]}
        self.writes.append(f"put policy {name} {sorted(params or {})}")
        stored = dict(body["policy"])  # ISM fills in defaults: stored != sent
        stored["states"] = [dict(state, retry={"count": 3}) for state in stored["states"]]
        self.policies[name] = stored
        return {}


def test_templates_keep_one_node_green_and_grow_a_replica_on_a_second_node() -> None:
    for body in (queries_template("ubi_queries"), events_template("ubi_events")):
        settings = body["template"]["settings"]
        assert settings == {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    assert queries_template("ubi_queries")["index_patterns"] == ["ubi_queries"]


def test_templates_take_the_configured_shards_and_replicas() -> None:
    layout = UbiIndexSettings(shards=3, replicas=2)
    settings = events_template("ev", layout)["template"]["settings"]
    assert settings == {"number_of_shards": 3, "number_of_replicas": 2}
    assert events_template("ev", layout)["index_patterns"] == ["ev"]


@pytest.mark.parametrize(
    ("given", "kept"), [("1", 1), (0, 0), (" 0-all ", "0-all"), ("1-2", "1-2")]
)
def test_replicas_are_a_count_or_an_auto_expand_range(given: Any, kept: Any) -> None:
    assert UbiIndexSettings(replicas=given).replicas == kept


@pytest.mark.parametrize("bad", [-1, "2-1", "one", "0-", True])
def test_bad_replicas_are_refused_naming_the_value_and_the_rule(bad: Any) -> None:
    with pytest.raises(ValidationError, match="auto-expand range") as info:
        UbiIndexSettings(replicas=bad)
    assert repr(bad) in str(info.value)


def test_replica_settings_of_a_count_and_of_a_range() -> None:
    assert replica_settings(1) == {"number_of_replicas": 1}
    assert replica_settings("0-1") == {"auto_expand_replicas": "0-1"}


def test_rollover_templates_match_the_backing_indexes_behind_the_write_alias() -> None:
    body = queries_template("ubi_queries", ROLLOVER)
    assert body["index_patterns"] == ["ubi_queries-*"]
    settings = body["template"]["settings"]
    assert settings["plugins.index_state_management.rollover_alias"] == "ubi_queries"
    assert settings["number_of_shards"] == 2


def test_rollover_policy_rolls_over_on_the_conditions_then_deletes() -> None:
    policy = rollover_policy("ubi_events", ROLLOVER)["policy"]
    hot, delete = policy["states"]
    assert hot["actions"] == [
        {
            "rollover": {
                "min_primary_shard_size": "30gb",
                "min_index_age": "7d",
                "min_doc_count": 1000,
            }
        }
    ]
    assert hot["transitions"] == [{"state_name": "delete", "conditions": {"min_index_age": "90d"}}]
    assert delete["actions"] == [{"delete": {}}]
    assert policy["ism_template"][0]["index_patterns"] == ["ubi_events-*"]
    kept = rollover_policy(
        "ubi_events", ROLLOVER.model_copy(update={"rollover": RolloverSettings(enabled=True)})
    )
    assert [s["name"] for s in kept["policy"]["states"]] == ["hot"]


def test_rollover_without_any_condition_is_refused() -> None:
    with pytest.raises(ValidationError, match="no condition"):
        RolloverSettings(enabled=True, min_primary_shard_size=None, min_index_age=None)


def test_install_with_rollover_creates_policy_template_and_first_backing_index_once() -> None:
    cluster = FakeCluster()
    install_templates(cluster, "q", "e", ROLLOVER)  # type: ignore[arg-type]
    assert set(cluster.policies) == {policy_id("q"), policy_id("e")}
    assert cluster.templates[template_name("q")]["index_patterns"] == ["q-*"]
    assert cluster.indexes["q-000001"] == {"aliases": {"q": {"is_write_index": True}}}
    assert "e-000001" in cluster.indexes
    before = list(cluster.writes)
    install_templates(cluster, "q", "e", ROLLOVER)  # type: ignore[arg-type]
    assert cluster.writes == before  # idempotent: no policy update, no new index


def test_a_changed_rollover_policy_is_updated_with_its_sequence_number() -> None:
    cluster = FakeCluster()
    install_templates(cluster, "q", "e", ROLLOVER)  # type: ignore[arg-type]
    changed = ROLLOVER.model_copy(
        update={"rollover": RolloverSettings(enabled=True, min_doc_count=5)}
    )
    install_templates(cluster, "q", "e", changed)  # type: ignore[arg-type]
    assert f"put policy {policy_id('q')} ['if_primary_term', 'if_seq_no']" in cluster.writes


def test_rollover_on_a_cluster_without_ism_is_refused_naming_plugin_and_setting() -> None:
    cluster = FakeCluster(plugins=("opensearch-knn",))
    with pytest.raises(SetupError, match="opensearch-index-management.*rollover.enabled"):
        install_templates(cluster, "q", "e", ROLLOVER)  # type: ignore[arg-type]
    assert cluster.templates == {}


def test_rollover_over_an_existing_concrete_index_is_refused_naming_it() -> None:
    cluster = FakeCluster()
    cluster.indexes["q"] = {}
    with pytest.raises(SetupError, match="'q' to be an alias.*q-000001"):
        install_templates(cluster, "q", "e", ROLLOVER)  # type: ignore[arg-type]


def test_without_rollover_no_policy_and_no_index_is_created() -> None:
    cluster = FakeCluster(plugins=())
    install_templates(cluster, "q", "e")  # type: ignore[arg-type]
    assert set(cluster.templates) == {template_name("q"), template_name("e")}
    assert cluster.policies == {} and cluster.indexes == {}


def test_layout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKTUNE_INGEST__INDEX__REPLICAS", "1")
    monkeypatch.setenv("CLICKTUNE_INGEST__INDEX__SHARDS", "4")
    monkeypatch.setenv("CLICKTUNE_INGEST__INDEX__ROLLOVER__ENABLED", "true")
    layout = Settings().ingest.index
    assert (layout.shards, layout.replicas, layout.rollover.enabled) == (4, 1, True)


def test_the_worker_installs_the_templates_with_its_configured_layout() -> None:
    from ingest.config import IngestSettings
    from ingest.worker import IngestWorker
    from tests.unit.ingest.ingest_fakes import FakeConsumer, FakeProducer

    settings = IngestSettings(index=ROLLOVER)
    cluster = FakeCluster()
    IngestWorker(FakeConsumer([]), FakeProducer(), cluster, settings).setup()
    body = cluster.templates[template_name(settings.events_index)]
    assert body["template"]["settings"]["number_of_shards"] == 2
    assert f"{settings.events_index}-000001" in cluster.indexes

"""The registry keeps a short history per alias, for rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import RegistryError
from serving.models.registry import HISTORY_KEPT, LocalRegistry


def _model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"x")
    (path / "tokenizer.json").write_text("{}")
    meta = {"format": 1, "kind": "text", "version": "x", "dimension": 4, "max_length": 8}
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    registry = LocalRegistry(tmp_path / "models")
    for i in range(1, 4):
        registry.add(_model(tmp_path / f"src{i}"))
    return registry


def test_alias_history_records_each_move_once(registry: LocalRegistry) -> None:
    for version in ["v1", "v2", "v2", "v3"]:
        registry.set_alias("production", version)
    assert registry.alias_history("production") == ["v1", "v2", "v3"]
    assert registry.alias_history("candidate") == []


def test_rollback_returns_to_the_previous_version(registry: LocalRegistry) -> None:
    for version in ["v1", "v2", "v3"]:
        registry.set_alias("production", version)
    assert registry.rollback_alias("production") == "v2"
    assert registry.rollback_alias("production") == "v1"
    assert registry.aliases()["production"] == "v1"
    with pytest.raises(RegistryError, match="no previous version to roll back to"):
        registry.rollback_alias("production")


def test_history_starts_from_an_alias_set_before_history_existed(registry: LocalRegistry) -> None:
    (registry.root / "aliases.json").write_text('{"production": "v1"}')
    registry.set_alias("production", "v2")
    assert registry.rollback_alias("production") == "v1"


def test_history_is_bounded(registry: LocalRegistry) -> None:
    for i in range(HISTORY_KEPT + 5):
        registry.set_alias("production", ["v1", "v2"][i % 2])
    assert len(registry.alias_history("production")) == HISTORY_KEPT

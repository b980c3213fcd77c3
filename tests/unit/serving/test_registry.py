from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import RegistryError
from serving.models.registry import LocalRegistry, ModelVersion


def model_dir(path: Path, dimension: int = 8, parent: str | None = None) -> Path:
    """A model directory whose ONNX file is a placeholder (the registry never runs it)."""
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"onnx")
    (path / "tokenizer.json").write_text("{}")
    meta = {
        "format": 1,
        "kind": "text",
        "version": "dev",
        "dimension": dimension,
        "max_length": 128,
        "base_model": "tiny",
        "parent": parent,
        "created_at": "2026-01-01T00:00:00+00:00",
        "metrics": {"ndcg@10": 0.5},
        "parity_min_cosine": 1.0,
    }
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "models")


def test_versions_are_numbered_in_order(registry: LocalRegistry, tmp_path: Path) -> None:
    first = registry.add(model_dir(tmp_path / "a"))
    second = registry.add(model_dir(tmp_path / "b", parent="v1"))
    assert (first.version, second.version) == ("v1", "v2")
    assert second.parent == "v1" and second.dimension == 8 and second.metrics == {"ndcg@10": 0.5}
    assert [v.version for v in registry.list()] == ["v1", "v2"]


def test_added_model_reports_its_registry_version(registry: LocalRegistry, tmp_path: Path) -> None:
    version = registry.add(model_dir(tmp_path / "a"), version="base")
    meta = json.loads((version.path / "clicktune.json").read_text())
    assert meta["version"] == "base"
    assert (tmp_path / "a" / "clicktune.json").read_text().count('"dev"') == 1  # source untouched


def test_an_existing_version_is_never_overwritten(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add(model_dir(tmp_path / "a"), version="base")
    with pytest.raises(RegistryError, match="'base' already exists"):
        registry.add(model_dir(tmp_path / "b", dimension=16), version="base")
    assert registry.get("base").dimension == 8


def test_a_broken_directory_is_refused_and_leaves_nothing(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    broken = model_dir(tmp_path / "a")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(RegistryError, match="missing tokenizer.json"):
        registry.add(broken)
    assert registry.list() == []


def test_aliases_resolve_and_show_on_versions(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add(model_dir(tmp_path / "a"))
    registry.add(model_dir(tmp_path / "b"))
    registry.set_alias("production", "v1")
    registry.set_alias("production", "v2")
    registry.set_alias("candidate", "v2")
    production = registry.get("production")
    assert isinstance(production, ModelVersion)
    assert production.version == "v2" and production.aliases == ("candidate", "production")
    assert registry.aliases() == {"production": "v2", "candidate": "v2"}
    assert registry.get("v1").aliases == ()


def test_unknown_ref_names_what_exists(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add(model_dir(tmp_path / "a"))
    registry.set_alias("production", "v1")
    with pytest.raises(RegistryError, match=r"unknown model 'v9'.*\['v1'\].*\['production'\]"):
        registry.get("v9")


def test_alias_to_an_unknown_version_is_refused(registry: LocalRegistry) -> None:
    with pytest.raises(RegistryError, match="unknown version 'v3'"):
        registry.set_alias("production", "v3")


@pytest.mark.parametrize("name", ["Prod", "a__b", "../x", ""])
def test_names_that_cannot_become_index_names_are_refused(
    registry: LocalRegistry, tmp_path: Path, name: str
) -> None:
    with pytest.raises(RegistryError, match="is not allowed"):
        registry.add(model_dir(tmp_path / "a"), version=name)


def test_archive_moves_a_version_out_and_never_reuses_its_number(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        registry.add(model_dir(tmp_path / name))
    registry.set_alias("production", "v1")
    registry.set_alias("candidate", "v2")
    with pytest.raises(RegistryError, match=r"alias\(es\) \['production'\] still name it"):
        registry.archive("v1")
    archived = registry.archive("v2")  # a canceled task's candidate
    assert archived.is_dir() and [v.version for v in registry.list()] == ["v1"]
    assert registry.aliases() == {"production": "v1"}
    assert registry.add(model_dir(tmp_path / "c")).version == "v3"

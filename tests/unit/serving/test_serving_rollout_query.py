"""Promoting a query model: only over its document model's index, and then only the registry
alias moves (no document alias, no reindex); refused by name over anyone else's index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import PairingError, RegistryError
from serving.models.model_dir import read_model_meta
from serving.models.registry import LocalRegistry
from serving.rollout.rollout import Rollout
from tests.unit.serving.index_fakes import FakeDocumentIndex, FakeReindex


def model_dir(root: Path, version: str, document_model: str | None = None) -> Path:
    """A model directory as the registry reads it; a query model when `document_model` is set."""
    path = root / "src" / version
    path.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        (path / name).write_text("unused: rollouts never load the model")
    meta = {"format": 1, "kind": "text", "version": version, "dimension": 16, "max_length": 16}
    if document_model is not None:
        meta |= {"kind": "query", "document_model": document_model, "parent": document_model}
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


class Watched(FakeDocumentIndex):
    """The fake document index, counting document alias moves."""

    swaps = 0

    def swap_alias(self, index: str) -> str | None:
        self.swaps += 1
        return super().swap_alias(index)


@pytest.fixture()
def world(tmp_path: Path) -> tuple[Rollout, LocalRegistry, Watched, FakeReindex]:
    registry = LocalRegistry(tmp_path / "models")
    for version, document_model in [("v1", None), ("v2", None), ("q1", "v1"), ("q2", "v2")]:
        registry.add(model_dir(tmp_path, version, document_model), version)
    registry.set_alias("production", "v1")
    docs = Watched()
    docs.build("v1", live=True)
    docs.build("v2")
    reindex = FakeReindex(docs)
    rollout = Rollout(registry, docs, reindex)  # type: ignore[arg-type]
    return rollout, registry, docs, reindex


def test_a_query_model_over_the_live_index_s_model_moves_only_the_registry_alias(world) -> None:
    rollout, registry, docs, reindex = world
    live = docs.live
    result = rollout.promote("q1", allow_reindex=False)
    assert (result.version, result.previous) == ("q1", "v1")
    assert result.index == live and not result.reindexed
    assert registry.aliases()["production"] == "q1" and registry.get("q1").document_model == "v1"
    assert docs.live == live and docs.swaps == 0 and reindex.runs == []
    assert list(docs.counts) == ["docs__v1__1", "docs__v2__1"]  # no index was built


@pytest.mark.parametrize("allow_reindex", [True, False])
def test_a_query_model_over_another_model_s_index_is_refused_naming_the_pairing(
    world, allow_reindex: bool
) -> None:
    rollout, registry, docs, reindex = world
    with pytest.raises(PairingError) as refused:
        rollout.promote("q2", allow_reindex=allow_reindex)
    message = str(refused.value)
    assert "query model 'q2' over document model 'v2'" in message
    assert "'docs__v1__1' (built by model 'v1')" in message and "nothing moved" in message
    assert registry.aliases()["production"] == "v1"
    assert docs.live == "docs__v1__1" and docs.swaps == 0 and reindex.runs == []


def test_rollback_to_a_query_model_returns_to_its_document_model_s_index(world) -> None:
    rollout, registry, docs, reindex = world
    rollout.promote("q1")
    rollout.promote("v2")  # a full model: its kept index goes behind the document alias
    assert docs.live == "docs__v2__1"
    result = rollout.rollback()
    assert (result.version, result.index) == ("q1", "docs__v1__1")
    assert registry.aliases()["production"] == "q1" and docs.live == "docs__v1__1"
    assert reindex.runs == []


def test_a_query_model_directory_must_name_its_document_model(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "q9", document_model="v1")
    meta = json.loads((path / "clicktune.json").read_text())
    del meta["document_model"]
    (path / "clicktune.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="a query model must name its 'document_model'"):
        read_model_meta(path, error=RegistryError)

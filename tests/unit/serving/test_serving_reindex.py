"""Reindex pieces without servers: the checkpoint file and index-name parsing."""

from __future__ import annotations

from unittest.mock import MagicMock

from serving.config import IndexSettings
from serving.index_versions import index_version
from serving.reindex import Checkpoint, CheckpointStore
from serving.vector_index import DocumentIndex


def test_checkpoint_round_trips_and_clears(tmp_path) -> None:
    store = CheckpointStore(tmp_path / "reindex", "docs")
    assert store.load() is None
    checkpoint = Checkpoint("docs__v1__1", "docs__v2__1", "v2", "docs", 100, 50, ["d00049"])
    store.save(checkpoint)
    assert CheckpointStore(tmp_path / "reindex", "docs").load() == checkpoint
    store.clear()
    assert store.load() is None


def test_index_names_give_their_model_version() -> None:
    doc_index = DocumentIndex(MagicMock(), IndexSettings(prefix="docs"))
    assert index_version(doc_index, "docs__v2__3") == "v2"
    assert index_version(doc_index, "docs__base.1-x__12") == "base.1-x"
    assert index_version(doc_index, "other__v2__3") is None
    assert IndexSettings().next_alias == "docs_next"

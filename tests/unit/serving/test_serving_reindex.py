"""Reindex without servers: the checkpoint file, index-name parsing, and a whole run over an
in-memory OpenSearch with a query model's pair."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import MagicMock

import numpy as np

from serving.config import IndexSettings
from serving.encoders.batcher import MicroBatcher
from serving.encoders.encoder import HashingEncoder
from serving.encoders.encoder_pair import PairedEncoder
from serving.index.doc_images import embed_documents
from serving.index.index_versions import index_version
from serving.index.reindex import Reindexer
from serving.index.reindex_checkpoints import Checkpoint, CheckpointStore
from serving.index.vector_index import DocumentIndex
from tests.unit.serving.opensearch_memory import MemoryOpenSearch
from tests.unit.serving.test_encoder_pair import Shifted


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


def test_a_reindex_with_a_query_model_embeds_with_its_document_side(tmp_path: Path) -> None:
    """The new index holds the document model's vectors and is named after it: a reindex with
    query model q2 over v2 builds v2's index, which q2 then searches."""
    texts = {f"d{i}": text for i, text in enumerate(["wing lift", "heat shock", "flow", "drag"])}
    client = MemoryOpenSearch()
    client.add_index("docs__v1__1", {i: {"text": t, "embedding": [0.0]} for i, t in texts.items()})
    client.aliases["docs__v1__1"].add("docs")
    docs = DocumentIndex(client, IndexSettings())  # type: ignore[arg-type]
    pair = PairedEncoder(Shifted(16, "q2"), HashingEncoder(16, "v2"))

    report = Reindexer(docs, MicroBatcher(pair), tmp_path, batch_size=3, progress=False).run()

    assert (report.index, report.docs, report.previous) == ("docs__v2__1", 4, "docs__v1__1")
    assert docs.live_index() == "docs__v2__1"
    stored = np.asarray([client.docs["docs__v2__1"][i]["embedding"] for i in texts])
    corpus = [{"_id": i, "text": t} for i, t in texts.items()]
    document_side = embed_documents(HashingEncoder(16, "v2"), corpus, docs.settings)
    np.testing.assert_allclose(stored, document_side, atol=1e-6)
    assert not np.allclose(stored, pair.encode_queries(list(texts.values())), atol=1e-3)

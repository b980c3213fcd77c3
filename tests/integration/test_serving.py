"""The serving package against the real OpenSearch (and Kafka): versioned indexes, alias swaps,
k-NN search, corpus indexing and the `clicktune index` command."""

from __future__ import annotations

import json
import uuid
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from serving.config import IndexSettings
from serving.encoders.encoder import HashingEncoder
from serving.errors import BulkIndexError, QueryLogError
from serving.index.corpus import document_text, read_corpus
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from serving.state.query_log import KafkaQueryLog
from tests.shared_data import SHARED_DATA

pytestmark = pytest.mark.integration
CRANFIELD = SHARED_DATA / "cranfield"


@pytest.fixture()
def doc_index(opensearch, unique: str):  # type: ignore[no-untyped-def]
    settings = IndexSettings(
        alias=f"t-docs-{unique}", prefix=f"t-docs-{unique}", bulk_batch_size=50
    )
    yield DocumentIndex(opensearch, settings)
    opensearch.indices.delete(index=f"t-docs-{unique}__*", params={"expand_wildcards": "all"})


def test_versions_alias_swap_and_knn_search(doc_index: DocumentIndex) -> None:
    docs = [
        {"_id": "a", "title": "x", "text": "first"},
        {"_id": "b", "title": "y", "text": "second"},
        {"_id": "c", "title": "z", "text": "third"},
    ]
    vectors = np.eye(4, dtype=np.float32)[:3]
    first = doc_index.create_version("v1", 4)
    second = doc_index.create_version("v1", 4)
    assert (first, second) == (f"{doc_index.alias}__v1__1", f"{doc_index.alias}__v1__2")
    for name in (first, second):
        assert doc_index.bulk_index(name, docs, vectors) == 3
        assert doc_index.refresh(name) == 3
    assert doc_index.live_index() is None
    assert doc_index.swap_alias(first) is None
    assert doc_index.swap_alias(second) == first
    assert doc_index.live_index() == second

    hits = doc_index.search_knn([0.1, 0.9, 0.0, 0.0], k=2)
    assert [h.id for h in hits] == ["b", "a"] and hits[0].index == second
    assert hits[0].source == {"title": "y", "text": "second"}  # the vector stays out
    assert doc_index.get_documents(["c", "a", "missing"]) == {
        "c": {"title": "z", "text": "third"},
        "a": {"title": "x", "text": "first"},
    }
    mapping = doc_index.client.indices.get_mapping(index=second)[second]["mappings"]
    assert mapping["properties"]["embedding"]["method"]["engine"] == "lucene"
    assert mapping["properties"]["title"]["analyzer"] == "english"


def test_index_corpus_of_cranfield_finds_a_document_by_its_own_text(doc_index) -> None:
    docs = list(islice(read_corpus(CRANFIELD), 200))
    encoder = HashingEncoder(dimension=128, version="hashing")
    report = index_corpus(docs, encoder, doc_index, batch_size=64, progress=False)
    assert report.docs == 200 and doc_index.live_index() == report.index
    target = docs[123]
    query = encoder.encode([document_text(target, ["title", "text"])])[0]
    assert doc_index.search_knn(query, k=3)[0].id == target["_id"]


def test_a_failed_bulk_leaves_the_alias_where_it_was(doc_index) -> None:
    encoder = HashingEncoder(dimension=16, version="hashing")
    good = index_corpus([{"_id": "1", "text": "fine"}], encoder, doc_index, progress=False)
    bad = [{"_id": "2", "text": "fine"}, {"_id": "3", "text": "x", "title": {"not": "text"}}]
    with pytest.raises(BulkIndexError) as caught:
        index_corpus(bad, encoder, doc_index, progress=False)
    assert caught.value.errors and "3" in str(caught.value)
    assert doc_index.live_index() == good.index
    assert doc_index.client.indices.get(index=f"{doc_index.alias}__*").keys() == {good.index}


def test_clicktune_index_command(tmp_home: Path, unique: str, monkeypatch, opensearch) -> None:
    pytest.importorskip("onnx")
    from clicktune.cli import app
    from serving.models.registry import LocalRegistry
    from tests.unit.serving.tiny_model import build_tiny_model

    name = f"t-cli-{unique}"
    monkeypatch.setenv("CLICKTUNE_SERVING__INDEX__ALIAS", name)
    monkeypatch.setenv("CLICKTUNE_SERVING__INDEX__PREFIX", name)
    corpus = tmp_home / "docs.jsonl"
    corpus.write_text(
        '{"_id": "1", "title": "wing", "text": "lift"}\n'
        '{"_id": "2", "title": "shock", "text": "heat flow"}\n'
    )
    runner = CliRunner()
    empty = runner.invoke(app, ["index", str(corpus)])
    assert empty.exit_code == 1 and "run `clicktune models import` first" in empty.output
    build_tiny_model(tmp_home / "tiny")
    registry = LocalRegistry(tmp_home / "models")
    registry.add(tmp_home / "tiny", version="base")
    registry.set_alias("production", "base")
    try:
        result = runner.invoke(app, ["index", str(corpus), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["index"] == f"{name}__base__1" and report["docs"] == 2
        assert report["alias"] == name and report["seconds"] > 0
    finally:
        opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})


def test_kafka_query_log_round_trip(settings, unique: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from clicktune.clients import kafka_options

    topic = f"t-queries-{unique}"
    options = kafka_options(settings.kafka)
    producer = KafkaProducer(**options, acks="all")
    record = {"query_id": str(uuid.uuid4()), "user_query": "wing lift"}
    try:
        KafkaQueryLog(producer, topic).publish(record)
        consumer = KafkaConsumer(
            topic, **options, auto_offset_reset="earliest", consumer_timeout_ms=10_000
        )
        (message,) = list(islice(consumer, 1))
        consumer.close()
        assert message.key == record["query_id"].encode() and json.loads(message.value) == record
    finally:
        producer.close(timeout=5)
        admin = KafkaAdminClient(**options)
        admin.delete_topics([topic])
        admin.close()


def test_kafka_query_log_failure_raises(settings) -> None:
    class DeadProducer:
        def send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise TimeoutError("broker unreachable")

    with pytest.raises(QueryLogError, match="not acknowledged by topic 'ubi.queries'"):
        KafkaQueryLog(DeadProducer(), "ubi.queries", timeout_s=1).publish({"query_id": "q"})

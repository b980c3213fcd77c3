"""A tiny random-weight CLIP model end to end on the real servers: `clicktune index` plumbing
embeds image documents with the image tower, a real `clicktune serve` process takes documents
with base64 images on /v1/documents, answers text searches from the text tower and logs the UBI
query. A random-weight model ranks nothing well: the assertions are on the plumbing."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("open_clip")

from kafka import KafkaAdminClient, KafkaConsumer  # noqa: E402

from clicktune.clients import kafka_options  # noqa: E402
from serving.config import EncoderSettings, ImageSettings, IndexSettings  # noqa: E402
from serving.encoders.model_loader import image_tower, load_model_dir  # noqa: E402
from serving.index.doc_images import ImageReader, load_image  # noqa: E402
from serving.index.indexer import index_corpus  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from tests.integration.serve_ready import running_serve, serve_env  # noqa: E402
from tests.unit.tuner.clip_support import register_tiny_clip, write_swatches  # noqa: E402

WRITE_TOKEN = "t-clip-write"


class Clip:
    def __init__(self, url: str, name: str, home: Path, files: dict[str, Path], topic: str):
        self.url, self.name, self.home, self.files, self.topic = url, name, home, files, topic
        auth = {"Authorization": f"Bearer {WRITE_TOKEN}"}  # /v1/documents needs scope write
        self.http = httpx.Client(base_url=url, timeout=60, headers=auth)
        self.encoder: Any = load_model_dir(home / "models" / "versions" / "c1", EncoderSettings())


LOCAL = ImageReader(ImageSettings(), local_paths=True)


@pytest.fixture(scope="module")
def clip_server(services, opensearch, tmp_path_factory) -> Iterator[Clip]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("clip")
    name = f"t-clip-{os.getpid()}-{int(time.time())}"
    registry = LocalRegistry(home / "models")
    registry.set_alias("production", register_tiny_clip(registry, home / "src").version)
    files = write_swatches(home / "images")
    encoder = load_model_dir(registry.get("c1").path, EncoderSettings())
    corpus = [{"_id": n, "title": f"{n} swatch", "image": str(f)} for n, f in files.items()]
    corpus.append({"_id": "text-only", "title": "a plain text document"})
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    # what `clicktune index --trust-local-images` runs
    index_corpus(corpus, encoder, docs, batch_size=4, progress=False, images=LOCAL)
    env = serve_env(
        home,
        name,
        services,
        CLICKTUNE_SERVING__HOT_SWAP__POLL_S="0",
        CLICKTUNE_AUTH__WRITE_TOKEN=WRITE_TOKEN,
    )
    try:
        with running_serve(home, env) as url:
            yield Clip(url, name, home, files, f"{name}-queries")
    finally:
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})
        admin = KafkaAdminClient(**kafka_options(services.kafka))
        topics = [f"{name}-{t}" for t in ("control", "queries", "events")]
        admin.delete_topics(topics, raise_errors=False)
        admin.close()


def _stored_vector(opensearch: Any, index: str, doc_id: str) -> np.ndarray:
    return np.array(opensearch.get(index=index, id=doc_id)["_source"]["embedding"])


def test_the_index_holds_image_vectors_from_the_image_tower(clip_server, opensearch) -> None:  # type: ignore[no-untyped-def]
    live = DocumentIndex(opensearch, IndexSettings(alias=clip_server.name)).live_index()
    mapping = opensearch.indices.get_mapping(index=live)[live]["mappings"]["properties"]
    assert mapping["embedding"]["dimension"] == 32 and mapping["image"]["index"] is False
    tower = image_tower(clip_server.encoder)
    navy = tower.encode_images([load_image(str(clip_server.files["navy"]), LOCAL)])[0]
    assert np.allclose(_stored_vector(opensearch, live, "navy"), navy, atol=1e-5)
    text = clip_server.encoder.encode(["a plain text document"])[0]
    assert np.allclose(_stored_vector(opensearch, live, "text-only"), text, atol=1e-5)


def test_documents_with_base64_images_are_indexed_and_text_search_finds_them(
    clip_server, opensearch
) -> None:  # type: ignore[no-untyped-def]
    raw = clip_server.files["gold"].read_bytes()
    image = "data:image/png;base64," + base64.b64encode(raw).decode()
    body = {"documents": [{"_id": "up-gold", "title": "uploaded", "image": image}], "refresh": True}
    answer = clip_server.http.post("/v1/documents", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["indexed"] == 1 and answer.json()["model_version"] == "c1"
    stored = _stored_vector(opensearch, answer.json()["index"], "up-gold")
    gold = image_tower(clip_server.encoder).encode_images([load_image(image)])[0]
    assert stored.shape == (32,) and np.allclose(stored, gold, atol=1e-5)

    bad = {"documents": [{"_id": "bad", "image": "data:image/png;base64,bm9wZQ=="}]}
    refused = clip_server.http.post("/v1/documents", json=bad)
    assert refused.status_code == 422 and "not a decodable image" in refused.text
    # Over the API: no local path, no file:// URL, no host off serving.index.images.allowed_hosts
    for value in (
        str(clip_server.files["gold"]),
        clip_server.files["gold"].as_uri(),
        clip_server.url,
    ):
        bad = {"documents": [{"_id": "bad", "image": value}]}
        refused = clip_server.http.post("/v1/documents", json=bad)
        assert refused.status_code == 422 and "not an allowed source" in refused.text

    search = clip_server.http.post("/v1/search", json={"query": "gold swatch", "k": 20})
    assert search.status_code == 200, search.text
    result = search.json()
    ids = [hit["id"] for hit in result["hits"]]
    assert result["model_version"] == "c1" and "up-gold" in ids and "navy" in ids
    assert len(ids) == 10  # 8 swatches, the text-only document and the uploaded one
    assert _logged_query_ids(clip_server.topic, result["query_id"]) == {result["query_id"]}


def _logged_query_ids(topic: str, wanted: str) -> set[str]:
    consumer = KafkaConsumer(
        topic,
        **kafka_options(_kafka_settings()),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        found = {json.loads(m.value)["query_id"] for m in consumer}
    finally:
        consumer.close()
    return found & {wanted}


def _kafka_settings() -> Any:
    from clicktune.config import load_settings

    return load_settings().kafka

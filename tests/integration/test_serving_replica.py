"""A real `clicktune serve` process against the real OpenSearch and Kafka: OpenSearch calling it
through ml-commons (connector, ingest pipeline, neural query), hot swap under load, admin
promote and rollback moving the document alias with the model (refused without an index of the
version, reindexing with `"reindex": true`), refused models, the control topic, the admin token,
/v1/documents and /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnx")

from serving.config import IndexSettings  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from tests.integration.serve_ready import running_serve, serve_env  # noqa: E402
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector  # noqa: E402

TOKEN = "t-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["wing lift", "boundary layer flow", "heat shock", "drag", "lift drag wing heat"]


class Server:
    def __init__(
        self, url: str, name: str, registry: LocalRegistry, tables: dict, docs: DocumentIndex
    ) -> None:
        self.url, self.name, self.registry, self.tables = url, name, registry, tables
        self.docs = docs
        self.http = httpx.Client(base_url=url, timeout=120)

    def version(self) -> str:
        return self.http.get("/v1/models").json()["data"][0]["id"]

    def promote(self, version: str, reindex: bool = False) -> httpx.Response:
        body = {"version": version, "reindex": reindex}
        return self.http.post("/admin/models/promote", json=body, headers=AUTH)

    def state(self) -> tuple[str, str, str | None]:
        """The model served, the registry alias, the index behind the document alias."""
        return self.version(), self.registry.aliases()["production"], self.docs.live_index()


def _registry(home: Path) -> tuple[LocalRegistry, dict[str, np.ndarray]]:
    registry = LocalRegistry(home / "models")
    tables = {}
    for version, seed in [("v1", 0), ("v2", 1)]:
        tables[version] = build_tiny_model(home / "src" / version, seed=seed)
        registry.add(home / "src" / version, version)
    build_tiny_model(home / "src" / "wide", dimension=16)
    registry.add(home / "src" / "wide", "wide")
    shutil.copytree(home / "src" / "v1", home / "src" / "broken")
    onnx_file = home / "src" / "broken" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:200])  # a truncated, corrupt model
    registry.add(home / "src" / "broken", "broken")
    registry.set_alias("production", "v1")
    return registry, tables


@pytest.fixture(scope="module")
def server(services, opensearch, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("replica")
    name = f"t-replica-{os.getpid()}-{int(time.time())}"
    registry, tables = _registry(home)
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs.swap_alias(docs.create_version("v1", 8))  # the live index: 8-dimensional vectors
    docs.create_version("v2", 8)  # a kept index of v2 (as empty as the live one): no reindex
    env = serve_env(
        home,
        name,
        services,
        CLICKTUNE_SERVING__ML_COMMONS__NAME=name,
        CLICKTUNE_SERVING__ML_COMMONS__PIPELINE=f"{name}-embed",
        CLICKTUNE_SERVING__HOT_SWAP__POLL_S="0",  # changes arrive on the control topic only
        CLICKTUNE_ADMIN__TOKEN=TOKEN,
    )
    try:
        with running_serve(home, env) as url:
            yield Server(url, name, registry, tables, docs)
    finally:
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})


def test_serve_says_which_runtime_its_self_test_chose_and_both_figures(server: Server) -> None:
    """configs/default.yaml's runtime auto: the start-up self-test's figures are printed."""
    log = (server.registry.root.parent / "serve.log").read_text()
    line = next(x for x in log.splitlines() if x.startswith("encoder runtime auto, text models"))
    assert re.search(r"runtime (onnxruntime|openvino) \(onnxruntime \d+ texts/s", line), line
    assert re.search(r"openvino (\d+ texts/s|left out)", line), line


def _check(server: Server, body: dict, texts: list[str]) -> None:
    """Every vector is the one the version named in the answer gives for its text."""
    table = server.tables[body["model"]]
    for text, item in zip(texts, body["data"], strict=True):
        assert np.allclose(item["embedding"], expected_vector(table, text), atol=1e-5)


def test_hot_swap_under_load_fails_no_request(server: Server) -> None:
    failures: list[str] = []
    seen: dict[str, int] = {}
    stop = threading.Event()

    def load(offset: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            i = offset
            while not stop.is_set():
                texts = [TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 4)]
                i += 1
                try:
                    answer = http.post("/v1/embeddings", json={"input": texts})
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text}")
                        continue
                    _check(server, answer.json(), texts)
                    seen[answer.json()["model"]] = seen.get(answer.json()["model"], 0) + 1
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in ["v2", "v1", "v2", "v1", "v2"]:
            time.sleep(0.4)
            answer = server.promote(version)
            assert answer.status_code == 200, answer.text
            assert answer.json()["published"] is True
            assert answer.json()["index"] == server.docs.live_index() == _index(server, version)
        time.sleep(0.4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert seen.get("v1", 0) > 0 and seen.get("v2", 0) > 0
    assert server.state() == ("v2", "v2", _index(server, "v2"))


def _index(server: Server, version: str) -> str:
    return f"{server.name}__{version}__1"


@pytest.mark.parametrize(
    ("version", "reason"),
    [("broken", "cannot load"), ("wide", "model 'wide' needs a reindex")],
)
def test_a_corrupt_or_unindexed_model_is_refused(server: Server, version, reason) -> None:
    before = server.state()
    answer = server.promote(version)
    assert answer.status_code == 409 and reason in answer.json()["error"]["message"]
    assert server.state() == before
    embedded = server.http.post("/v1/embeddings", json={"input": ["wing"]})
    assert embedded.status_code == 200 and embedded.json()["model"] == before[0]
    refusal = server.http.get("/admin/models", headers=AUTH).json()["serving"]["last_refusal"]
    assert refusal["version"] == "broken"  # a missing index is no model refusal


def test_rollback_moves_the_document_alias_back(server: Server) -> None:
    back = server.http.post("/admin/models/rollback", headers=AUTH)
    assert back.status_code == 200, back.text
    assert server.state() == ("v1", "v1", _index(server, "v1"))
    assert server.promote("v2").status_code == 200
    assert server.state() == ("v2", "v2", _index(server, "v2"))


def test_replicas_follow_the_control_topic(server: Server, settings) -> None:
    from kafka import KafkaProducer

    from clicktune.clients import kafka_options

    before = server.version()
    target = "v1" if before == "v2" else "v2"
    producer = KafkaProducer(**kafka_options(settings.kafka))
    try:
        for version in (target, before):  # and back: the aliases never moved
            message = json.dumps(
                {"type": "model_changed", "alias": "production", "version": version}
            )
            deadline = time.monotonic() + 30
            # Resent until the listener, which starts at the latest offset, sees it.
            while server.version() != version and time.monotonic() < deadline:
                producer.send(f"{server.name}-control", value=message.encode()).get(timeout=10)
                time.sleep(1)
            assert server.version() == version
    finally:
        producer.close()


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"Authorization": "Bearer nope"}, 401), (AUTH, 200)]
)
def test_admin_token_over_http(server: Server, headers: dict, status: int) -> None:
    assert server.http.get("/admin/models", headers=headers).status_code == status


def test_limits_and_metrics(server: Server) -> None:
    too_many = server.http.post("/v1/embeddings", json={"input": ["wing"] * 1000})
    assert too_many.status_code == 413 and "max_batch_inputs=256" in too_many.text
    metrics = server.http.get("/metrics").text
    assert 'route="/v1/embeddings"' in metrics and "clicktune_encode_batch_size_bucket" in metrics
    assert (
        f'clicktune_model_info{{dimension="8",slot="production",version="{server.version()}"}}'
        in metrics
    )


def test_documents_are_embedded_into_the_live_index(server: Server) -> None:
    docs = [
        {"_id": "d1", "title": "wing", "text": "lift"},
        {"_id": "d2", "title": "heat", "text": "shock"},
        {"title": "boundary", "text": "layer flow"},
    ]
    answer = server.http.post(
        "/v1/documents", json={"documents": docs, "refresh": True}, headers=AUTH
    )
    assert server.http.post("/v1/documents", json={"documents": docs}).status_code == 401
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["indexed"] == 3 and body["ids"][:2] == ["d1", "d2"]
    assert body["index"] == server.docs.live_index() == _index(server, server.version())
    hits = server.http.post("/v1/search", json={"query": "shock heat", "k": 2}).json()["hits"]
    assert hits[0]["id"] == "d2"


def test_opensearch_embeds_through_clicktune(server: Server, opensearch, unique: str) -> None:
    from typer.testing import CliRunner

    from clicktune.cli import app

    pipeline = f"{server.name}-embed"
    env = {
        "CLICKTUNE_SERVING__ML_COMMONS__NAME": server.name,
        "CLICKTUNE_SERVING__ML_COMMONS__PIPELINE": pipeline,
    }
    runner = CliRunner(env=env)
    first = runner.invoke(app, ["opensearch", "connect", "--url", server.url, "--json"])
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout.strip().splitlines()[-1])
    index = f"{server.name}-neural-{unique}"
    try:
        again = runner.invoke(app, ["opensearch", "connect", "--url", server.url, "--json"])
        assert again.exit_code == 0, (again.output, again.exception)
        assert json.loads(again.stdout.strip().splitlines()[-1])["model_id"] == result["model_id"]
        assert result["dimension"] == 8 and result["pipeline"] == pipeline
        opensearch.indices.create(index=index, body=_neural_index(pipeline, 8))
        for i, text in enumerate(["heat shock", "wing lift", "boundary layer flow"]):
            opensearch.index(index=index, id=str(i), body={"text": text}, refresh=True)
        query = {
            "neural": {
                "embedding": {"query_text": "lift wing", "model_id": result["model_id"], "k": 3}
            }
        }
        hits = opensearch.search(index=index, body={"query": query})["hits"]["hits"]
        assert hits[0]["_source"]["text"] == "wing lift"
        assert len(hits[0]["_source"]["embedding"]) == 8

        opensearch.indices.delete(index=index)
        opensearch.indices.create(index=index, body=_neural_index(pipeline, 16))
        stale = runner.invoke(app, ["opensearch", "connect", "--url", server.url])
        assert (
            stale.exit_code == 0
            and f"index '{index}' holds vectors of another dimension" in stale.output
        )
    finally:
        opensearch.indices.delete(index=index, ignore_unavailable=True)
        _remove_ml(opensearch, server.name, pipeline)


def test_promote_with_reindex_re_embeds_the_documents_and_rollback_returns(
    server: Server,
) -> None:
    before = server.state()
    answer = server.promote("wide", reindex=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["reindexed"] is True
    assert server.state() == ("wide", "wide", _index(server, "wide"))
    assert server.docs.refresh(_index(server, "wide")) == server.docs.refresh(before[2] or "")
    hits = server.http.post("/v1/search", json={"query": "shock heat", "k": 2}).json()["hits"]
    assert hits[0]["id"] == "d2"  # the documents, embedded by the 16-dimensional model
    back = server.http.post("/admin/models/rollback", headers=AUTH)
    assert back.status_code == 200, back.text
    assert server.state() == before


def _neural_index(pipeline: str, dimension: int) -> dict:
    method = {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}
    vector = {"type": "knn_vector", "dimension": dimension, "method": method}
    return {
        "settings": {"index.knn": True, "number_of_replicas": 0, "default_pipeline": pipeline},
        "mappings": {"properties": {"text": {"type": "text"}, "embedding": vector}},
    }


def _remove_ml(opensearch, name: str, pipeline: str) -> None:  # type: ignore[no-untyped-def]
    from serving.index.ml_commons import _delete_model, _find

    for model in _find(opensearch, "models", name):
        _delete_model(opensearch, model["_id"])
    for connector in _find(opensearch, "connectors", name):
        opensearch.transport.perform_request(
            "DELETE", f"/_plugins/_ml/connectors/{connector['_id']}"
        )
    opensearch.ingest.delete_pipeline(id=pipeline)

"""Reindex against the real OpenSearch: killed at random points and resumed, dual writes while
it runs, the alias never on a partial index, retention of previous indexes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from opensearchpy.exceptions import TransportError

from serving.api.app import create_app
from serving.api.auth import Authenticator, Scope
from serving.api.documents import documents_router
from serving.config import IndexSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import ReindexPendingError
from serving.index.indexer import index_corpus
from serving.index.reindex import Reindexer
from serving.index.vector_index import DocumentIndex
from serving.state.query_log import InMemoryQueryLog
from tests.integration import rollout_support
from tests.integration.rollout_support import SlowEncoder, encoder_for

pytestmark = pytest.mark.integration
N_DOCS = 600


@pytest.fixture()
def doc_index(opensearch, unique: str):  # type: ignore[no-untyped-def]
    name = f"t-ri-{unique}"
    settings = IndexSettings(alias=name, prefix=name, bulk_batch_size=50, retention=1)
    yield DocumentIndex(opensearch, settings)
    opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})


def _corpus(n: int = N_DOCS) -> list[dict]:
    words = ["wing", "lift", "drag", "flow", "shock", "heat", "layer", "boundary", "plate", "jet"]
    rng = random.Random(7)
    return [
        {"_id": f"d{i:05d}", "title": f"doc {i}", "text": " ".join(rng.choices(words, k=8))}
        for i in range(n)
    ]


def _all_ids(doc_index: DocumentIndex, index: str) -> list[str]:
    body = {"size": 10_000, "_source": False, "query": {"match_all": {}}}
    return [h["_id"] for h in doc_index.client.search(index=index, body=body)["hits"]["hits"]]


@pytest.fixture(params=["local", "opensearch"])
def checkpoints(request, opensearch, unique: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(extra script arguments, a reader of the checkpoint of alias `t-ri-<unique>`) of the
    `serving.state.backend` under test: a file, or a document of its own index."""
    alias = f"t-ri-{unique}"
    if request.param == "local":
        path = tmp_path / f"{alias}.json"
        yield [], lambda: json.loads(path.read_text()) if path.is_file() else None
        return
    index = f"t-ckpt-{unique}"

    def read() -> dict | None:
        try:
            found = opensearch.get(index=index, id=f"reindex:{alias}", params={"ignore": 404})
        except TransportError:  # the script created the index a moment ago: shard starting
            return None
        return found["_source"]["checkpoint"] if found.get("found") else None

    yield [index], read
    opensearch.indices.delete(index=index, ignore_unavailable=True)


def test_a_reindex_killed_at_random_points_resumes_to_every_document_once(
    doc_index: DocumentIndex, tmp_path: Path, settings, checkpoints
) -> None:
    source = index_corpus(_corpus(), encoder_for("v1"), doc_index, progress=False).index
    seen: list[tuple[str, ...]] = []
    stop = threading.Event()

    def watch_alias() -> None:
        while not stop.is_set():
            seen.append(tuple(sorted(doc_index.client.indices.get_alias(name=doc_index.alias))))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_alias, daemon=True)
    watcher.start()
    script = Path(rollout_support.__file__)
    extra, read_checkpoint = checkpoints
    args = [settings.opensearch.url, doc_index.alias, str(tmp_path), "v2", "0.15", *extra]
    rng = random.Random(3)
    first_target: list[str] = []  # the index the first checkpoint names
    # kill points: during start-up, then after a random number of written batches (x3)
    points = [("seconds", rng.uniform(0.2, 1.5))] + [
        ("docs", n) for n in sorted(rng.sample(range(50, N_DOCS - 49, 50), 3))
    ]
    for kind, at in points:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE)
        deadline = time.monotonic() + (at if kind == "seconds" else 60)
        while proc.poll() is None and time.monotonic() < deadline:
            checkpoint = read_checkpoint()
            if checkpoint is not None and not first_target:
                first_target.append(checkpoint["target"])
            if kind == "docs" and checkpoint is not None and checkpoint["written"] >= at:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run([sys.executable, str(script), *args], capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    stop.set()
    watcher.join()
    target = doc_index.live_index()
    assert target != source and target is not None
    assert first_target == [target], "a run started over instead of resuming the checkpoint"
    assert read_checkpoint() is None  # cleared after the swap
    assert {holders for holders in seen} <= {(source,), (target,)}  # never a partial index
    ids = _all_ids(doc_index, target)
    assert len(ids) == N_DOCS and set(ids) == {d["_id"] for d in _corpus()}
    doc = doc_index.client.get(index=target, id="d00042")["_source"]
    expected = encoder_for("v2").encode([f"{doc['title']} {doc['text']}"])[0]
    assert np.allclose(doc["embedding"], expected, atol=1e-5)
    assert not doc_index.client.indices.exists_alias(name=doc_index.settings.next_alias)
    assert doc_index.client.indices.exists(index=source)  # kept for rollback


def test_writes_and_deletes_during_a_reindex_reach_the_new_index(
    doc_index: DocumentIndex, tmp_path: Path
) -> None:
    index_corpus(_corpus(300), encoder_for("v1"), doc_index, progress=False)
    slot = ModelSlot(encoder_for("v1"))
    serving = ServingSettings(index=doc_index.settings)
    router = documents_router(slot, doc_index, serving, encoder_for=encoder_for)
    auth = Authenticator({Scope.WRITE: "t-write"})
    app = create_app(
        slot, doc_index, InMemoryQueryLog(), serving, routers=[router], authenticator=auth
    )
    api = TestClient(app, headers={"Authorization": "Bearer t-write"})
    reindexer = Reindexer(
        doc_index, SlowEncoder("v2", 0.2), tmp_path, batch_size=25, progress=False
    )
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(report=reindexer.run()))
    runner.start()
    while not doc_index.client.indices.exists_alias(name=doc_index.settings.next_alias):
        time.sleep(0.05)
    new_docs = [{"_id": f"new{i}", "title": "new", "text": f"fresh words {i}"} for i in range(5)]
    posted = api.post("/v1/documents", json={"documents": new_docs})
    assert posted.status_code == 200 and len(posted.json()["indexes"]) == 2
    for doc_id in ("d00003", "d00290", "new4"):  # early, late (not yet copied), and a new one
        assert api.delete(f"/v1/documents/{doc_id}").status_code == 200
    runner.join()
    target = result["report"].index
    assert doc_index.live_index() == target
    ids = set(_all_ids(doc_index, target))
    expected = {d["_id"] for d in _corpus(300)} | {f"new{i}" for i in range(4)}
    assert ids == expected - {"d00003", "d00290"}
    new = doc_index.client.get(index=target, id="new1")["_source"]["embedding"]
    assert np.allclose(new, encoder_for("v2").encode(["new fresh words 1"])[0], atol=1e-5)
    assert api.delete("/v1/documents/nope").status_code == 404


def test_an_unfinished_reindex_is_reported_and_retention_keeps_one_previous(
    doc_index: DocumentIndex, tmp_path: Path
) -> None:
    first = index_corpus(_corpus(60), encoder_for("v1"), doc_index, progress=False).index
    reindexer = Reindexer(doc_index, encoder_for("v2"), tmp_path, batch_size=20, progress=False)
    reindexer._copy = lambda checkpoint: (_ for _ in ()).throw(KeyboardInterrupt())  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        reindexer.run()
    fresh = Reindexer(doc_index, encoder_for("v2"), tmp_path, batch_size=20, progress=False)
    with pytest.raises(ReindexPendingError, match="--resume"):
        fresh.run()
    second = fresh.run(resume=True).index
    third = Reindexer(doc_index, HashingEncoder(40, "v3"), tmp_path, progress=False).run().index
    assert doc_index.live_index() == third
    assert doc_index.client.indices.exists(index=second)  # one previous kept (retention=1)
    assert not doc_index.client.indices.exists(index=first)

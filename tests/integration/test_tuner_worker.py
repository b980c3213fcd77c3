"""The tuner worker against the real OpenSearch (and Kafka for the full loop): the task API,
a task taken through to production, and a worker killed (SIGKILL) in each stage, then resumed
or failed by a fresh worker with nothing half done visible.

A tiny random-weight sentence-transformers model (tests/integration/worker_support.py) stands
in for MiniLM so that training, export and reindexing take seconds.
"""

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
from fastapi.testclient import TestClient
from opensearchpy.helpers import bulk

from serving.app import create_app
from serving.config import IndexSettings, ServingSettings
from serving.encoder import HashingEncoder, OnnxTextEncoder
from serving.indexer import index_corpus
from serving.query_log import InMemoryQueryLog
from serving.registry import LocalRegistry
from serving.slot import ModelSlot
from serving.task_api import task_router
from serving.tasks import OpenSearchTaskStore, new_task
from serving.vector_index import DocumentIndex
from tests.integration.worker_support import build_tiny_st_model
from tests.unit.serving.test_app import MemoryIndex

pytestmark = pytest.mark.integration
DATA = Path("/work/shared/data/cranfield")
DOCS = 300
ROOT = Path(__file__).resolve().parents[2]


# -- the task API ------------------------------------------------------------------------------
@pytest.fixture()
def api(opensearch, unique: str) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    index = f"t-tasks-{unique}"
    store = OpenSearchTaskStore(opensearch, index)
    encoder = HashingEncoder(8, "v")
    app = create_app(
        ModelSlot(encoder),
        MemoryIndex(encoder),
        InMemoryQueryLog(),
        ServingSettings(),
        routers=[task_router(store)],
    )
    yield TestClient(app)
    opensearch.indices.delete(index=index, ignore_unavailable=True)


URL = "/api/v1/fine-tuning/task"


def test_task_api_creates_reads_lists_and_is_idempotent(api: TestClient) -> None:
    body = {"fine_tuning_method": "weighted-infonce", "metadata": {"who": "ci"}}
    made = api.post(URL, json={**body, "idempotency_key": "key-1"})
    assert made.status_code == 201
    task = made.json()
    assert task["status"] == "pending" and task["stage"] == "queued"
    assert task["batch_id"] is None and task["metadata"] == {"who": "ci"}
    assert {"id", "created_at", "updated_at", "metrics", "version"} <= set(task)
    again = api.post(URL, json={**body, "fine_tuning_method": "other", "idempotency_key": "key-1"})
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    assert again.json()["fine_tuning_method"] == "weighted-infonce"

    others = [api.post(URL, json={**body, "batch_id": f"b{i}"}).json()["id"] for i in range(3)]
    assert api.get(f"{URL}/{task['id']}").json()["metadata"] == {"who": "ci"}
    listed = api.get(URL, params={"limit": 2}).json()
    assert [t["id"] for t in listed] == others[::-1][:2]
    page = api.get(URL, params={"limit": 2, "offset": 2}).json()
    assert [t["id"] for t in page] == [others[0], task["id"]]
    assert api.get(f"{URL}/nope").status_code == 404
    assert api.post(URL, json={"batch_id": "x"}).status_code == 422


def test_task_api_cancels_a_pending_task_and_refuses_a_finished_one(api: TestClient) -> None:
    task = api.post(URL, json={"fine_tuning_method": "m"}).json()
    canceled = api.put(f"{URL}/{task['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert api.post(f"{URL}/{task['id']}/cancel").json()["stage"] == "canceled"  # idempotent
    listed = api.get(URL, params={"status": "canceled"}).json()
    assert [t["id"] for t in listed] == [task["id"]]
    assert api.get(URL, params={"status": "pending"}).json() == []
    assert api.get(URL, params={"status": "bogus"}).status_code == 422


# -- the worker on a small world ---------------------------------------------------------------
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

    def __init__(self, opensearch, unique: str, home: Path, tiny: Path) -> None:  # type: ignore[no-untyped-def]
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
            "CLICKTUNE_TUNER__WORKER__LEASE_S": "3",
            "CLICKTUNE_TUNER__WORKER__POLL_S": "1",
            "CLICKTUNE_TUNER__WORKER__TRIGGER_ENABLED": "false",
            "CLICKTUNE_TUNER__TRAIN__BASE_MODEL": str(tiny),
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
        import_model(self.registry, str(tiny), max_length=64)
        alias = self.env["CLICKTUNE_SERVING__INDEX__ALIAS"]
        self.doc_index = DocumentIndex(opensearch, IndexSettings(alias=alias, prefix=alias))
        self.docs, self.queries, self.qrels = _judged()
        encoder = OnnxTextEncoder.from_dir(self.registry.get("base").path, _encoder_settings())
        index_corpus(self.docs, encoder, self.doc_index, batch_size=100, progress=False)
        self.store = OpenSearchTaskStore(
            opensearch, self.env["CLICKTUNE_TUNER__WORKER__TASKS_INDEX"]
        )

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


@pytest.mark.slow
def test_a_queued_task_runs_to_production_with_once(world: World) -> None:
    world.add_sessions(40)
    task, _ = world.store.create(new_task("weighted-infonce"))
    answer = world.run_once()
    final = world.store.get(task.id)
    assert answer["tasks"][0]["id"] == task.id
    assert final.status == "done" and final.batch_id == "batch-0001", final.reason
    assert world.registry.aliases()["production"] == final.version
    live = world.doc_index.live_index()
    assert f"__{final.version}__" in str(live)
    world.assert_nothing_half_done()
    stages = [h["stage"] for h in final.history]
    assert stages == [
        "queued",
        "releasing",
        "training",
        "registered",
        "reindexing",
        "promoting",
        "done",
    ]


KILL_POINTS = ["release", "train", "register", "reindex", "promote"]


@pytest.mark.slow
def test_a_worker_killed_in_each_stage_is_resumed_with_nothing_half_done(world: World) -> None:
    world.add_sessions(40)
    for point in KILL_POINTS:
        batch = None if point == "release" else "batch-0001"
        task, _ = world.store.create(new_task("m", batch_id=batch))
        production = world.registry.aliases()["production"]
        killed = world.worker(point, module="tests.integration.worker_support")
        assert killed.returncode == -9, f"{point}: {killed.stderr[-2000:]}"
        left = world.store.get(task.id)
        assert left.status == "processing", f"{point}: {left.stage}"
        if point != "promote":  # the promotion is the one step that moves production
            assert world.registry.aliases()["production"] == production, point
        world.assert_nothing_half_done()

        world.run_once()
        final = world.store.get(task.id)
        assert final.status == "done" and final.resumes == 1, f"{point}: {final.reason}"
        assert world.registry.aliases()["production"] == final.version != production
        assert f"__{final.version}__" in str(world.doc_index.live_index())
        world.assert_nothing_half_done()
    assert [b.name for b in sorted((world.home / "batches").glob("batch-*.json"))] == [
        "batch-0001.json"
    ]  # the batch the killed worker released was adopted, not released again


@pytest.mark.slow
def test_a_task_killed_past_max_resumes_fails_with_the_reason_and_cleans_up(world: World) -> None:
    world.add_sessions(40)
    task, _ = world.store.create(new_task("m"))
    production = world.registry.aliases()["production"]
    killed = world.worker("reindex", module="tests.integration.worker_support")
    assert killed.returncode == -9
    world.run_once(CLICKTUNE_TUNER__WORKER__MAX_RESUMES="0")
    final = world.store.get(task.id)
    assert final.status == "error" and "died in stage 'reindexing'" in str(final.reason)
    assert "partial index" in str(final.reason)
    assert world.registry.aliases()["production"] == production
    world.assert_nothing_half_done()
    prefix = world.doc_index.settings.prefix
    names = world.client.indices.get(index=f"{prefix}__{final.version}__*", ignore=404)
    assert not [n for n in names if n not in ("error", "status")], "the partial index is left"


@pytest.mark.slow
def test_cancel_stops_a_running_task(world: World) -> None:
    world.add_sessions(40)
    task, _ = world.store.create(new_task("m"))
    production = world.registry.aliases()["production"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "clicktune", "tuner", "run", "--once", "--json"],
        env=world.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while world.store.get(task.id).stage.value in ("queued", "releasing"):
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        from serving.tasks import cancel_task

        cancel_task(world.store, task.id)
        out, err = worker.communicate(timeout=300)
    finally:
        worker.kill()
    final = world.store.get(task.id)
    assert final.stage.value == "canceled", err[-2000:]
    assert world.registry.aliases()["production"] == production
    world.assert_nothing_half_done()


@pytest.mark.slow
def test_clicks_through_kafka_bring_a_better_model_to_production_unattended(
    world: World,
) -> None:
    """serve + ingest + `tuner run` (scheduler, trigger on): simulated users search and click;
    nobody runs anything else, and search ends up served by a new, gated model."""
    import httpx
    from kafka import KafkaProducer

    from clicktune.clients import kafka_options
    from clicktune.config import Settings
    from tests.integration.test_end_to_end import Server
    from tuner.simulator import ClickSimulator, UserModel

    sessions = 3 * len(world.queries[:40])
    env = {
        **world.env,
        "CLICKTUNE_TUNER__WORKER__TRIGGER_ENABLED": "true",
        "CLICKTUNE_TUNER__WORKER__MIN_NEW_SESSIONS": str(sessions),
        "CLICKTUNE_TUNER__WORKER__MIN_INTERVAL_S": "0",
        "CLICKTUNE_TUNER__TRAIN__MAX_STEPS": "30",
        "CLICKTUNE_TUNER__TRAIN__LEARNING_RATE": "0.001",
        "CLICKTUNE_TUNER__GATE__ENABLED": "true",
        "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "1",
        "CLICKTUNE_SERVING__ENCODER__MAX_LENGTH": "64",
    }
    logs = world.home / "logs"
    logs.mkdir(parents=True)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "clicktune", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"{args[0]}.log").open("w"),
        )
        for args in (["ingest", "run"], ["tuner", "run"])
    ]
    server = Server(env)
    try:
        simulator = ClickSimulator(world.qrels, UserModel(eta=0.5, noise=0.02), seed=3)
        producer = KafkaProducer(
            **kafka_options(Settings().kafka),
            acks="all",
            value_serializer=lambda v: json.dumps(v).encode(),
        )
        for round_ in range(3):
            for query in world.queries[:40]:
                client = f"u{round_}-{query['_id']}"
                answer = httpx.post(
                    f"{server.url}/v1/search",
                    json={"query": query["text"], "k": 10, "client_id": client},
                    timeout=30,
                ).json()
                hits = [h["id"] for h in answer["hits"]]
                for event in simulator.events(
                    answer["query_id"], query["_id"], hits, client_id=client
                ):
                    producer.send(env["CLICKTUNE_INGEST__EVENTS_TOPIC"], event)
        producer.flush(timeout=30)
        producer.close()
        deadline = time.monotonic() + 480
        served = "base"
        while time.monotonic() < deadline and served == "base":
            assert all(c.poll() is None for c in children), (logs / "tuner.log").read_text()[-3000:]
            time.sleep(2)
            served = httpx.post(
                f"{server.url}/v1/search", json={"query": "wing flutter"}, timeout=30
            ).json()["model_version"]
    finally:
        server.stop()
        for child in children:
            child.terminate()
            child.wait(timeout=30)
    tuner_log = (logs / "tuner.log").read_text()
    assert served != "base", tuner_log[-3000:]
    task = world.store.list(limit=1)[0]
    assert task.status == "done" and task.version == served
    assert task.metrics["candidate"]["ndcg@10"] > task.metrics["live"]["ndcg@10"]
    assert f"{sessions} new sessions" in tuner_log and "queue a task" in tuner_log
    assert world.registry.aliases()["production"] == served
    world.assert_nothing_half_done()

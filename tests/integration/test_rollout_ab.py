"""A/B rollout against the real OpenSearch: `/v1/search` routes by arm, simulated users click
(tuner/simulator.py), the UBI indexes are filled with those records, and the policy decides from
the metrics read back; interleaving credits clicks to the team that contributed the hit; promote
and rollback move the registry alias and the document alias together."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from opensearchpy.helpers import bulk

from serving.api.app import create_app
from serving.config import ABSettings, IndexSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from serving.models.registry import LocalRegistry
from serving.rollout.ab import (
    CANDIDATE,
    CONTROL,
    Arm,
    ArmRouter,
    ExperimentStore,
    new_experiment,
)
from serving.rollout.ab_stats import decide, metrics_of
from serving.rollout.rollout import Rollout
from serving.state.query_log import InMemoryQueryLog
from tests.shared_data import SHARED_DATA
from tuner.simulator import ClickSimulator, UserModel, event_record

pytestmark = pytest.mark.integration
CRANFIELD = SHARED_DATA / "cranfield"
STRINGS_AS_KEYWORDS = {
    "mappings": {
        "dynamic_templates": [
            {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}
        ]
    }
}


class RandomEncoder(HashingEncoder):
    """A useless model: a fixed random vector per text (the 'worse' arm)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")
            v = np.random.default_rng(seed).normal(size=self.dimension)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


ENCODERS = {"good": HashingEncoder(1024, "good"), "bad": RandomEncoder(1024, "bad")}


@pytest.fixture()
def world(opensearch, unique: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Cranfield indexed by both models (good behind `docs`, bad behind `docs_candidate`)."""
    name = f"t-ab-{unique}"
    settings = IndexSettings(alias=name, prefix=name, bulk_batch_size=500)
    doc_index = DocumentIndex(opensearch, settings)
    docs = [json.loads(line) for line in (CRANFIELD / "corpus.jsonl").open()]
    index_corpus(docs, ENCODERS["good"], doc_index, batch_size=500, progress=False)
    bad = DocumentIndex(opensearch, settings.model_copy(update={"alias": f"{name}-bad"}))
    index_corpus(docs, ENCODERS["bad"], bad, batch_size=500, progress=False)
    ubi = {"queries": f"t-ubiq-{unique}", "events": f"t-ubie-{unique}"}
    for index in ubi.values():
        opensearch.indices.create(index=index, body=STRINGS_AS_KEYWORDS)
    yield doc_index, bad.alias, ubi, tmp_path
    opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})
    opensearch.indices.delete(index=",".join(ubi.values()))


def _judged() -> tuple[list[dict], dict[str, dict[str, int]]]:
    queries = [json.loads(line) for line in (CRANFIELD / "queries.jsonl").open()]
    qrels: dict[str, dict[str, int]] = {}
    for line in list((CRANFIELD / "qrels.tsv").open())[1:]:
        query, doc, grade = line.split()
        qrels.setdefault(query, {})[doc] = int(grade)
    return [q for q in queries if q["_id"] in qrels], qrels


def _run_traffic(world, control: Arm, candidate: Arm, mode: str, searches: int, store_dir: Path):  # type: ignore[no-untyped-def]
    doc_index, _bad_alias, ubi, _tmp = world
    store = ExperimentStore(store_dir)
    experiment = new_experiment(control, candidate, 0.5, mode)  # type: ignore[arg-type]
    experiment = replace(experiment, salt=f"fixed-{mode}")  # reproducible split
    store.save(experiment)
    slot = ModelSlot(ENCODERS[control.model_version])
    query_log = InMemoryQueryLog()
    arms = ArmRouter(store, ENCODERS.__getitem__, doc_index, seed=1)
    serving = ServingSettings(index=doc_index.settings)
    api = TestClient(create_app(slot, doc_index, query_log, serving, arms=arms))
    queries, qrels = _judged()
    simulator = ClickSimulator(qrels, UserModel(noise=0.02), seed=5)
    rng = random.Random(11)
    events = []
    for i in range(searches):
        query = rng.choice(queries)
        answer = api.post("/v1/search", json={"query": query["text"], "client_id": f"u{i}"})
        assert answer.status_code == 200
        hit_ids = [h["id"] for h in answer.json()["hits"]]
        events += simulator.events(
            answer.json()["query_id"], query["_id"], hit_ids, client_id=f"u{i}"
        )
    client = doc_index.client
    bulk(
        client,
        [{"_index": ubi["queries"], "_id": r["query_id"], "_source": r} for r in query_log.records],
    )
    bulk(client, [{"_index": ubi["events"], "_source": e} for e in events], refresh=True)
    client.indices.refresh(index=ubi["queries"])
    return experiment, query_log, arms


def test_a_better_candidate_is_promoted_and_a_worse_one_rolled_back(world, tmp_path: Path) -> None:
    doc_index, bad_alias, ubi, _ = world
    good, bad = Arm(CONTROL, "good", doc_index.alias), Arm(CANDIDATE, "bad", bad_alias)
    settings = ABSettings(min_queries=100, mixture_sd=0.1)  # effects of ~0.1 CTR
    experiment, log, arms = _run_traffic(world, good, bad, "split", 500, tmp_path / "a")
    record = log.records[0]["query_attributes"]
    assert record["experiment"] == experiment.id and record["arm"] in (CONTROL, CANDIDATE)
    assert record["model_version"] == ("good" if record["arm"] == CONTROL else "bad")
    metrics = metrics_of(doc_index.client, experiment, ubi["queries"], ubi["events"])
    assert metrics.arms[CONTROL].queries + metrics.arms[CANDIDATE].queries == 500
    assert metrics.arms[CONTROL].ctr > metrics.arms[CANDIDATE].ctr
    decision = decide(experiment, metrics, settings)
    assert decision.action == "rollback", (metrics.as_dict(), decision)
    assert set(arms.health) == {CONTROL, CANDIDATE}

    swapped = (Arm(CONTROL, "bad", bad_alias), Arm(CANDIDATE, "good", doc_index.alias))
    later, _log, _arms = _run_traffic(world, *swapped, "split", 500, tmp_path / "b")
    metrics = metrics_of(doc_index.client, later, ubi["queries"], ubi["events"])
    decision = decide(later, metrics, settings)
    assert decision.action == "promote", (metrics.as_dict(), decision)


def test_interleaving_credits_clicks_to_the_arm_that_contributed_the_hit(world, tmp_path) -> None:
    doc_index, bad_alias, ubi, _ = world
    control, candidate = Arm(CONTROL, "bad", bad_alias), Arm(CANDIDATE, "good", doc_index.alias)
    experiment, log, _arms = _run_traffic(world, control, candidate, "interleave", 600, tmp_path)
    attributes = log.records[0]["query_attributes"]
    assert attributes["arm"] == "interleave"
    assert len(attributes["interleave_teams"]) == len(log.records[0]["query_response_hit_ids"])
    metrics = metrics_of(doc_index.client, experiment, ubi["queries"], ubi["events"])
    assert metrics.interleave.wins > 2 * metrics.interleave.losses  # the good model wins
    assert decide(experiment, metrics, ABSettings(min_queries=30)).action == "promote"

    # one hand-made click on a hit the candidate (team B) contributed is one win for it
    record = next(r for r in log.records[1:] if "B" in r["query_attributes"]["interleave_teams"])
    rank = record["query_attributes"]["interleave_teams"].index("B")
    store = tmp_path / "one"
    one = new_experiment(control, candidate, 0.5, "interleave")
    ExperimentStore(store).save(one)
    mine = {**record, "query_id": f"{record['query_id']}-x"}
    mine["query_attributes"] = {**record["query_attributes"], "experiment": one.id}
    click = event_record(
        "click",
        mine["query_id"],
        mine["query_response_hit_ids"][rank],
        rank,
        "u",
        None,
        datetime.now(UTC),
    )
    client = doc_index.client
    client.index(index=ubi["queries"], id=mine["query_id"], body=mine, refresh=True)
    client.index(index=ubi["events"], body=click, refresh=True)
    tally = metrics_of(client, one, ubi["queries"], ubi["events"]).interleave
    assert (tally.wins, tally.losses, tally.ties) == (1, 0, 0)


def _tiny_model_builder():  # type: ignore[no-untyped-def]
    path = Path(__file__).parents[1] / "unit" / "serving" / "tiny_model.py"
    spec = importlib.util.spec_from_file_location("tiny_model", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_tiny_model


def test_promote_reindexes_then_rollback_returns_to_the_kept_index(
    opensearch, unique, tmp_path
) -> None:
    build = _tiny_model_builder()
    registry = LocalRegistry(tmp_path / "models")
    for version, dim in (("v1", 8), ("v2", 12)):
        build(tmp_path / version, dimension=dim)
        registry.add(tmp_path / version, version=version)
    registry.set_alias("production", "v1")
    name = f"t-pr-{unique}"
    doc_index = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs = [{"_id": str(i), "text": f"wing lift {i}"} for i in range(40)]
    try:
        first = index_corpus(docs, HashingEncoder(8, "v1"), doc_index, progress=False).index
        reindexed: list[str] = []
        published: list[dict] = []

        def reindex(version: str):  # type: ignore[no-untyped-def]
            from serving.index.reindex import Reindexer

            reindexed.append(version)
            encoder = HashingEncoder(registry.get(version).dimension, version)
            return Reindexer(doc_index, encoder, tmp_path / "ri", progress=False).run()

        rollout = Rollout(registry, doc_index, reindex, publish=published.append)
        promoted = rollout.promote("v2")
        assert reindexed == ["v2"] and promoted.reindexed and promoted.published
        assert registry.aliases()["production"] == "v2" and doc_index.live_index() == promoted.index
        assert published[-1] == {
            "type": "model_changed",
            "alias": "production",
            "version": "v2",
            "reindex": True,
        }
        back = rollout.rollback()
        assert registry.aliases()["production"] == "v1" and doc_index.live_index() == first
        assert back.index == first and back.warning is None
        again = rollout.promote("v2")  # the kept v2 index is reused: no second reindex
        assert reindexed == ["v2"] and again.index == promoted.index
    finally:
        opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})

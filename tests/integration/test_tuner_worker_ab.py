"""The worker's A/B rollout against the real servers: `clicktune tuner run` (rollout: ab) takes a
task to `ab_running`, `clicktune serve` routes searches to the arms and reports their health,
`clicktune ingest run` stores the UBI records; simulated users who click more on the candidate
get it promoted, users who click less get it rolled back, and a candidate arm whose searches
fail is stopped by the guard before the sequential test could decide anything. A query adapter
or tower (rollout two_stage) goes through the interleaved online stage over the one live index,
promoted or rolled back by which team's hits users click, with the document index untouched.

A tiny random-weight model (worker_support.py) makes training and reindexing take seconds; the
users' taste is decided per arm (the arm is in each search answer), not by the model's quality,
so the outcome is known in advance.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opensearchpy.helpers import bulk

from clicktune.local_http import free_port, wait_until_ready
from serving.state.tasks import Stage, TaskRecord, new_task
from tests.integration.worker_world import DOCS, ROOT, World
from tuner.simulator import ClickSimulator, UserModel

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SEARCHES = 100  # about 50 per arm at traffic 0.5


class Loop:
    """ingest, tuner worker (scheduler) and one serving replica on `world`, with A/B settings."""

    def __init__(self, world: World, **env: str) -> None:
        self.world = world
        self.env = {
            **world.env,
            "CLICKTUNE_TUNER__WORKER__ROLLOUT": "ab",
            "CLICKTUNE_TUNER__WORKER__AB_TRAFFIC": "0.5",
            "CLICKTUNE_SERVING__AB__MIN_QUERIES": "20",  # per arm, before the mSPRT decides
            "CLICKTUNE_SERVING__AB__HEALTH_INDEX": f"tw_{world.unique}_arm_health",
            "CLICKTUNE_SERVING__AB__HEALTH_REPORT_S": "1",
            "CLICKTUNE_SERVING__ENCODER__MAX_LENGTH": "64",
            "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "1",
            **env,
        }
        self.logs = world.home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.children = {
            name: self._spawn(name, args)
            for name, args in (
                ("ingest", ["ingest", "run"]),
                ("tuner", ["tuner", "run"]),
                ("serve", ["serve", "--port", self.url.rsplit(":", 1)[1]]),
            )
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "clicktune", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(self.logs / f"{name}.log").open("w"),
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-4000:]

    def wait_for(self, task_id: str, done: Any, timeout_s: float) -> TaskRecord:
        """Poll the task until `done(task)`; every child must stay alive meanwhile."""
        deadline = time.monotonic() + timeout_s
        while True:
            for name, child in self.children.items():
                assert child.poll() is None, f"{name} exited:\n{self.log(name)}"
            task = self.world.store.get(task_id)
            if done(task):
                return task
            assert time.monotonic() < deadline, f"task {task.stage}:\n{self.log('tuner')}"
            time.sleep(0.5)

    def ready(self, timeout_s: float = 120) -> None:
        wait_until_ready(
            f"{self.url}/readyz",
            exit_code=self.children["serve"].poll,
            log_tail=lambda: self.log("serve"),
            timeout_s=timeout_s,
        )

    def traffic(self, liked: str | None, searches: int = SEARCHES) -> dict[str, int]:
        """Simulated users search; those in arm `liked` find what they want on top (and click),
        the others only click at random. Returns the status codes per arm."""
        from kafka import KafkaProducer

        from clicktune.clients import kafka_options
        from clicktune.config import Settings

        taste: dict[str, dict[str, int]] = {"": {"": 2}}  # grade 2 is the top grade
        keen = ClickSimulator(taste, UserModel(eta=0.5, noise=0.02), seed=1)
        indifferent = ClickSimulator({}, UserModel(noise=0.02), seed=2)
        producer = KafkaProducer(
            **kafka_options(Settings().kafka),
            acks="all",
            value_serializer=lambda v: json.dumps(v).encode(),
        )
        seen: dict[str, int] = {}
        for i in range(searches):
            query = self.world.queries[i % len(self.world.queries)]
            client = f"ab-{self.world.unique}-{i}"
            body = {"query": query["text"], "k": 10, "client_id": client}
            answer = httpx.post(f"{self.url}/v1/search", json=body, timeout=30)
            found = answer.json()
            arm = found["arm"] if answer.status_code == 200 else f"status {answer.status_code}"
            seen[arm] = seen.get(arm, 0) + 1
            if answer.status_code != 200:
                continue
            hits, qid = [h["id"] for h in found["hits"]], found["query_id"]
            if found["arm"] == liked:
                taste[qid] = {h: 2 for h in hits[:3]}
                events = keen.events(qid, qid, hits, client_id=client)
            else:
                events = indifferent.events(qid, query["_id"], hits, client_id=client)
            for event in events:
                producer.send(self.env["CLICKTUNE_INGEST__EVENTS_TOPIC"], event)
        producer.flush(timeout=30)
        producer.close()
        return seen

    def stop(self) -> None:
        for child in self.children.values():
            child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


@pytest.fixture()
def loop_for(world: World) -> Iterator[Any]:
    started: list[Loop] = []

    def start(**env: str) -> tuple[Loop, TaskRecord]:
        world.add_sessions(40)
        task, _ = world.store.create(new_task("weighted-infonce"))
        loop = Loop(world, **env)
        started.append(loop)
        loop.ready()
        # the stage is stored before its work: the experiment exists once the task notes it
        task = loop.wait_for(task.id, lambda t: "experiment" in t.notes or t.finished, 150)
        assert task.stage == Stage.ab_running, task.reason
        assert (world.home / "models" / "experiment.json").is_file()
        return loop, task

    yield start
    for loop in started:
        loop.stop()


def _experiment_over(world: World) -> bool:
    return not (world.home / "models" / "experiment.json").exists()


def test_users_clicking_more_on_the_candidate_get_it_promoted(world: World, loop_for) -> None:
    loop, task = loop_for()
    seen = loop.traffic(liked="candidate")
    assert seen.get("candidate", 0) >= 20 and seen.get("control", 0) >= 20, seen
    final = loop.wait_for(task.id, lambda t: t.finished, 90)
    assert final.status == "done", final.reason
    assert "CTR difference +" in str(final.reason)
    stages = [h["stage"] for h in final.history]
    assert stages[-3:] == ["ab_running", "promoting", "done"]
    assert world.registry.aliases()["production"] == final.version
    assert f"__{final.version}__" in str(world.doc_index.live_index())
    assert _experiment_over(world)
    world.assert_nothing_half_done()


def test_users_clicking_less_on_the_candidate_get_it_rolled_back(world: World, loop_for) -> None:
    loop, task = loop_for()
    production = world.registry.aliases()["production"]
    seen = loop.traffic(liked="control")
    assert seen.get("candidate", 0) >= 20, seen
    final = loop.wait_for(task.id, lambda t: t.finished, 90)
    assert final.stage == Stage.rejected, final.reason
    assert "CTR difference -" in str(final.reason)
    assert [h["stage"] for h in final.history][-2:] == ["rolling_back", "rejected"]
    assert world.registry.aliases()["production"] == production != final.version
    candidate = world.doc_index.settings.candidate_alias
    assert not world.client.indices.exists_alias(name=candidate)
    assert _experiment_over(world)
    world.assert_nothing_half_done()


def test_a_candidate_arm_whose_searches_fail_is_stopped_by_the_guard(
    world: World, loop_for
) -> None:
    # the sequential test could never decide (min_queries far out of reach): only a guard can
    loop, task = loop_for(
        CLICKTUNE_SERVING__AB__MIN_QUERIES="100000",
        CLICKTUNE_SERVING__AB__MIN_REQUESTS_FOR_GUARD="20",
    )
    production = world.registry.aliases()["production"]
    candidate = world.doc_index.settings.candidate_alias
    world.client.indices.delete_alias(index="_all", name=candidate)  # the candidate's index lost
    seen = loop.traffic(liked=None)
    failed = seen.get("status 503", 0)
    assert failed >= 20 and "candidate" not in seen, seen  # every candidate search failed
    experiment = task.notes["experiment"]
    metrics = httpx.get(f"{loop.url}/metrics", timeout=10).text
    errors = f'clicktune_arm_errors_total{{arm="candidate",experiment="{experiment}"}}'
    assert f"{errors} {failed}.0" in metrics
    traffic_ended = time.monotonic()
    final = loop.wait_for(task.id, lambda t: t.finished, 30)
    assert time.monotonic() - traffic_ended < 15, "the guard did not stop the arm at once"
    assert final.stage == Stage.rejected, final.reason
    judged = re.search(
        r"^guard: candidate error rate 1\.000 \((\d+) of (\d+) searches", str(final.reason)
    )
    assert judged is not None and judged[1] == judged[2], final.reason
    assert 20 <= int(judged[1]) <= failed  # decided on the replica's reported counts
    assert world.registry.aliases()["production"] == production
    assert _experiment_over(world)
    after = httpx.post(f"{loop.url}/v1/search", json={"query": "wing", "client_id": "ab-0"})
    assert after.status_code == 200 and after.json()["arm"] == "production"
    world.assert_nothing_half_done()


# A query adapter that barely moves ranks as the live model offline: the gate (promote_directly
# off) finds it not worse and leaves the decision to the online stage, an interleaved test of the
# two query sides over the one live index.
QUERY_TWO_STAGE = {
    "CLICKTUNE_TUNER__WORKER__ROLLOUT": "two_stage",
    "CLICKTUNE_TUNER__TRAIN__QUERY_ADAPTER_LEARNING_RATE": "1e-9",
    "CLICKTUNE_TUNER__TRAIN__LEARNING_RATE": "1e-9",  # a query tower's
    "CLICKTUNE_TUNER__GATE__ENABLED": "true",
    "CLICKTUNE_TUNER__GATE__PROMOTE_DIRECTLY": "false",
    "CLICKTUNE_TUNER__GATE__MIN_CONFIRM_QUERIES": "2",
    "CLICKTUNE_TUNER__GATE__NONINFERIORITY_MARGIN": "0.5",
}


def interleaved_traffic(loop: Loop, liked: str, searches: int = 40) -> None:
    """Interleaved searches; each user clicks the first hit team `liked` ("A": control, "B":
    the candidate) contributed, as the UBI query record the replica logged says."""
    world = loop.world
    shown: dict[str, list[str]] = {}
    for i in range(searches):
        query = world.queries[i % len(world.queries)]
        body = {"query": query["text"], "k": 10, "client_id": f"il-{world.unique}-{i}"}
        answer = httpx.post(f"{loop.url}/v1/search", json=body, timeout=30)
        assert answer.status_code == 200 and answer.json()["arm"] == "interleave", answer.text
        shown[answer.json()["query_id"]] = [h["id"] for h in answer.json()["hits"]]
    teams = _logged_teams(world, list(shown))
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events = []
    for qid, hits in shown.items():
        rank = teams[qid].index(liked)
        target = {"object_id": hits[rank], "object_id_field": "_id"}
        attributes = {"event_id": f"e-{qid}", "object": target, "position": {"ordinal": rank}}
        event = {"action_name": "click", "query_id": qid, "client_id": "c", "timestamp": now}
        source = {**event, "event_attributes": attributes}
        events.append({"_index": world.events_index, "_source": source})
    bulk(world.client, events, refresh=True)


def _logged_teams(world: World, query_ids: list[str], timeout_s: float = 60) -> dict[str, list]:
    """query id -> the interleave teams of its hits, once ingest has stored every record."""
    deadline = time.monotonic() + timeout_s
    while True:
        world.client.indices.refresh(index=world.queries_index)
        found = world.client.search(
            index=world.queries_index,
            body={"query": {"terms": {"query_id": query_ids}}, "size": len(query_ids)},
        )["hits"]["hits"]
        if len(found) == len(query_ids):
            return {
                h["_source"]["query_id"]: h["_source"]["query_attributes"]["interleave_teams"]
                for h in found
            }
        assert time.monotonic() < deadline, f"{len(found)} of {len(query_ids)} queries logged"
        time.sleep(1)


@pytest.mark.parametrize(
    ("method", "liked", "outcome"),
    [
        ("query_adapter", "B", "done"),
        ("query_adapter", "A", "rejected"),
        ("query_tower", "B", "done"),
    ],
)
def test_a_query_model_is_decided_by_interleaving_over_the_untouched_index(
    world: World, loop_for, method: str, liked: str, outcome: str
) -> None:
    live = world.doc_index.live_index()
    indexes = sorted(world.client.indices.get(index=f"tw_{world.unique}_docs*"))
    production = world.registry.aliases()["production"]
    loop, task = loop_for(**QUERY_TWO_STAGE, CLICKTUNE_TUNER__TRAIN__METHOD=method)
    assert task.metrics["side"] == "query" and task.metrics["verdict"] == "online", task.metrics
    assert task.metrics["reindexed"] is False
    version = world.registry.get(str(task.version))
    assert (version.kind, version.document_model) == ("query", production)
    experiment = json.loads((world.home / "models" / "experiment.json").read_text())
    assert experiment["mode"] == "interleave"
    alias = world.doc_index.settings.alias
    assert [experiment[arm]["index_alias"] for arm in ("control", "candidate")] == [alias, alias]

    interleaved_traffic(loop, liked)
    final = loop.wait_for(task.id, lambda t: t.finished, 90)
    assert final.stage == outcome, final.reason
    assert "win share - 1/2 " + ("+" if liked == "B" else "-") in str(final.reason)
    if outcome == "done":
        assert [h["stage"] for h in final.history][-3:] == ["ab_running", "promoting", "done"]
        assert world.registry.aliases()["production"] == version.version
        assert final.metrics["rollout"]["reindexed"] is False
    else:
        assert [h["stage"] for h in final.history][-2:] == ["rolling_back", "rejected"]
        assert world.registry.aliases()["production"] == production
    # Either way the document index is untouched: same live index, same indexes, every document.
    assert world.doc_index.live_index() == live
    assert sorted(world.client.indices.get(index=f"tw_{world.unique}_docs*")) == indexes
    assert world.doc_index.refresh(live) == DOCS
    assert _experiment_over(world)
    world.assert_nothing_half_done()

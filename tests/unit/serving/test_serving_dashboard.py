"""`/dashboard` and `/dashboard/data` with fake providers, and the real providers over a
registry, an experiment store and demo reports on disk (no services)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api.dashboard import DashboardSources, dashboard_router
from serving.api.dashboard_sources import (
    ab_source,
    models_source,
    replica_health,
    tasks_source,
    training_source,
    uplift_source,
)
from serving.config import ABSettings, DashboardSettings
from serving.errors import ExperimentError
from serving.models.registry import LocalRegistry
from serving.rollout.ab import CANDIDATE, CONTROL, Arm, ExperimentStore, new_experiment
from serving.rollout.ab_stats import tally
from serving.rollout.arm_health import ArmHealth, InMemoryArmHealthStore

PANELS = {"models", "ab", "uplift", "ingest", "training", "tasks"}


def _client(sources: DashboardSources, **settings: Any) -> TestClient:
    app = FastAPI()
    app.include_router(dashboard_router(sources, DashboardSettings(cache_s=0, **settings)))
    return TestClient(app)


def test_every_panel_carries_its_providers_dict() -> None:
    sources = DashboardSources(
        models=lambda: {"versions": [{"version": "v7"}]}, ingest=lambda: {"total_lag": 42}
    )
    answer = _client(sources, poll_s=3).get("/dashboard/data")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["panels"]) == PANELS and body["poll_s"] == 3
    assert body["panels"]["models"] == {"ok": True, "data": {"versions": [{"version": "v7"}]}}
    assert body["panels"]["ingest"]["data"]["total_lag"] == 42
    assert body["panels"]["tasks"] == {
        "ok": False,
        "error": "unavailable: no task store configured",
    }


def test_a_failing_provider_shows_as_unavailable_and_the_others_still_answer() -> None:
    def broken() -> dict[str, Any]:
        raise ConnectionError("kafka at 127.0.0.1:1 refused")

    sources = DashboardSources(ingest=broken, training=lambda: {"runs": []}, ab=lambda: [1])  # type: ignore[arg-type,return-value]
    answer = _client(sources).get("/dashboard/data")
    assert answer.status_code == 200
    panels = answer.json()["panels"]
    assert panels["ingest"] == {
        "ok": False,
        "error": "unavailable: ConnectionError: kafka at 127.0.0.1:1 refused",
    }
    assert panels["ab"]["error"] == "unavailable: the source returned list, not a dict"
    assert panels["training"] == {"ok": True, "data": {"runs": []}}


def test_a_hung_provider_times_out_and_is_not_called_again_while_it_hangs() -> None:
    release, calls = threading.Event(), []

    def hung() -> dict[str, Any]:
        calls.append(1)
        release.wait(10)
        return {"late": True}

    client = _client(DashboardSources(models=hung, ingest=dict), source_timeout_s=0.2)
    try:
        started = time.monotonic()
        first = client.get("/dashboard/data").json()["panels"]
        second = client.get("/dashboard/data").json()["panels"]
        assert time.monotonic() - started < 3
        assert first["models"]["error"] == "unavailable: no answer within source_timeout_s=0.2"
        assert second["models"]["ok"] is False and first["ingest"]["ok"] is True
        assert len(calls) == 1  # the second poll waited on the same call
    finally:
        release.set()
    time.sleep(0.1)
    assert client.get("/dashboard/data").json()["panels"]["models"]["data"] == {"late": True}


def test_readings_are_shared_for_cache_s() -> None:
    calls = []
    app = FastAPI()
    sources = DashboardSources(models=lambda: {"n": calls.append(1) or len(calls)})
    app.include_router(dashboard_router(sources, DashboardSettings(cache_s=60)))
    client = TestClient(app)
    first = client.get("/dashboard/data").json()
    assert client.get("/dashboard/data").json() == first and len(calls) == 1


def test_the_page_is_self_contained() -> None:
    answer = _client(DashboardSources()).get("/dashboard")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert "/dashboard/data" in page
    for panel in PANELS:
        assert f'id="panel-{panel}"' in page
    # no script, style, image or font comes from elsewhere: nothing past loopback is reachable
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "@import" not in page and ".innerHTML" not in page  # data goes in as text only


# --- the real providers --------------------------------------------------------------------


def _add_version(
    registry: LocalRegistry, tmp: Path, version: str, *, parent: str | None, metrics: dict
) -> None:
    src = tmp / "src" / version
    src.mkdir(parents=True)
    (src / "model.onnx").write_bytes(b"not read by the registry")
    (src / "tokenizer.json").write_text("{}")
    meta = {
        "format": 1,
        "kind": "text",
        "version": version,
        "dimension": 8,
        "max_length": 16,
        "parent": parent,
        "created_at": f"2026-01-0{len(registry.list()) + 1}T00:00:00+00:00",
        "metrics": metrics,
    }
    (src / "clicktune.json").write_text(json.dumps(meta))
    registry.add(src, version)


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    registry = LocalRegistry(tmp_path / "models")
    _add_version(registry, tmp_path, "v1", parent=None, metrics={})
    _add_version(
        registry,
        tmp_path,
        "v2",
        parent="v1",
        metrics={"sessions": 120, "val_ndcg@10": 0.41, "note": "text is dropped"},
    )
    _add_version(registry, tmp_path, "v3", parent="v2", metrics={"val_ndcg@10": 0.45})
    _add_version(registry, tmp_path, "v4", parent="v3", metrics={"val_ndcg@10": 0.47})
    registry.set_alias("production", "v1")
    registry.set_alias("production", "v2")  # v1 retired
    registry.set_alias("candidate", "v3")
    return registry


def _experiment(candidate: str = "v4"):  # type: ignore[no-untyped-def]
    return new_experiment(
        Arm(CONTROL, "v2", "docs"), Arm(CANDIDATE, candidate, "docs_candidate"), 0.5, "split"
    )


def _served(requests: int, errors: int = 0) -> ArmHealth:
    health = ArmHealth()
    for i in range(requests):
        health.observe(10.0, failed=i < errors)
    return health


class _DownHealthStore(InMemoryArmHealthStore):
    def read(self, experiment: str) -> dict[str, ArmHealth]:
        raise ExperimentError("cannot read arm health from 'clicktune-arm-health': refused")


def test_arm_health_is_the_sum_of_every_replica_else_this_replicas(tmp_path: Path) -> None:
    experiment = _experiment()
    local = {CANDIDATE: _served(3)}
    store = InMemoryArmHealthStore()
    read = replica_health(store, lambda: local)
    assert read(experiment) == (local, "this replica")  # no report has landed yet
    store.write("replica-a", experiment.id, {CANDIDATE: _served(10, errors=1)})
    store.write("replica-b", experiment.id, {CANDIDATE: _served(5), CONTROL: _served(7)})
    store.write("replica-a", "an-older-experiment", {CANDIDATE: _served(100)})
    summed, scope = read(experiment)
    assert scope == "all replicas"
    assert (summed[CANDIDATE].requests, summed[CANDIDATE].errors) == (15, 1)
    assert summed[CONTROL].requests == 7
    assert replica_health(_DownHealthStore(), lambda: local)(experiment) == (local, "this replica")

    experiments = ExperimentStore(tmp_path)
    experiments.save(experiment)
    data = ab_source(experiments, lambda e: tally([], {}), ABSettings(), health=read)()
    assert data["health_scope"] == "all replicas"
    assert data["health"][CANDIDATE]["requests"] == 15


def test_models_show_states_aliases_and_numeric_lineage(registry: LocalRegistry) -> None:
    experiment = _experiment()
    data = models_source(registry, "production", lambda: "v2", lambda: experiment)()
    states = {v["version"]: v["state"] for v in data["versions"]}
    assert states == {
        "v1": "retired",
        "v2": "production",
        "v3": "candidate",
        "v4": "in experiment",
    }
    assert [v["version"] for v in data["versions"]] == ["v4", "v3", "v2", "v1"]  # newest first
    v2 = next(v for v in data["versions"] if v["version"] == "v2")
    assert v2["serving_here"] and v2["aliases"] == ["production"] and v2["parent"] == "v1"
    assert v2["metrics"] == {"sessions": 120.0, "val_ndcg@10": 0.41}
    assert data["history"] == ["v1", "v2"]


def _records(arm: str, n: int, clicked: int) -> tuple[list[dict], dict[str, list[dict]]]:
    queries, events = [], {}
    for i in range(n):
        qid = f"{arm}-{i}"
        queries.append({"query_id": qid, "query_response_hit_ids": ["a", "b", "c"],
                        "query_attributes": {"arm": arm}})  # fmt: skip
        if i < clicked:
            shown = {"object": {"object_id": "abc"[i % 3]}, "position": {"ordinal": i % 3}}
            events[qid] = [{"action_name": "click", "event_attributes": shown}]
    return queries, events


def test_ab_shows_arms_intervals_and_the_decision(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path)
    assert ab_source(store, lambda e: tally([], {}), ABSettings())() == {"experiment": None}
    experiment = _experiment()
    store.save(experiment)
    qa, ea = _records(CONTROL, 300, 30)
    qb, eb = _records(CANDIDATE, 300, 150)
    read = ab_source(store, lambda e: tally(qa + qb, {**ea, **eb}), ABSettings(min_queries=100))
    data = read()
    assert data["experiment"]["id"] == experiment.id and data["experiment"]["status"] == "running"
    assert "salt" not in data["experiment"]
    control, candidate = data["arms"]
    assert (control["name"], control["model_version"], control["queries"]) == ("control", "v2", 300)
    assert control["ctr"]["value"] == 0.1 and candidate["ctr"]["value"] == 0.5
    low, high = candidate["ctr"]["ci95"]
    assert low < 0.5 < high and high < 1
    assert data["decision"]["action"] == "promote"

    store.stop()  # the last stopped experiment stays on the page
    data = read()
    assert data["experiment"]["id"] == experiment.id and data["experiment"]["status"] == "stopped"
    assert data["experiment"]["stopped_at"]


def test_uplift_reads_the_newest_report_else_registry_metrics(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    read = uplift_source(reports, registry)
    fallback = read()
    assert fallback["labels"] == ["v2", "v3", "v4"]
    assert fallback["series"] == [{"name": "val_ndcg@10", "values": [0.41, 0.45, 0.47]}]

    def report(name: str, ndcg: list[float], age_s: float) -> None:
        rounds = [
            {"round": i, "model_version": f"v{i + 1}", "status": "promoted",
             "metrics": {"ndcg@10": x, "mrr@10": x, "recall@100": 2 * x}}
            for i, x in enumerate(ndcg)
        ]  # fmt: skip
        clicks = {"ndcg@10": 0.35, "mrr@10": 0.35, "recall@100": 0.7}
        no_ipw = {"ndcg@10": 0.3, "mrr@10": 0.3, "recall@100": 0.6}
        body = {"dataset": name, "base": rounds[0]["metrics"], "supervised": None,
                "clicks": clicks, "no_ipw": no_ipw, "rounds": rounds}  # fmt: skip
        path = reports / name / "report.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(body))
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))

    report("old", [0.1, 0.2], age_s=100)
    report("new", [0.2, 0.25, 0.3], age_s=0)
    data = read()
    assert data["title"] == "closed loop on new"
    assert data["labels"] == ["round 0 (v1)", "round 1 (v2)", "round 2 (v3)"]
    assert data["series"][0] == {"name": "ndcg@10", "values": [0.2, 0.25, 0.3]}
    assert data["references"] == [
        {"name": "clicks ndcg@10", "value": 0.35},
        {"name": "no_ipw ndcg@10", "value": 0.3},
    ]
    assert data["uplift_ndcg@10_pct"] == pytest.approx(50.0)
    assert [s["name"] for s in data["series"]] == ["ndcg@10", "mrr@10", "recall@100"]

    # a run with --score-candidates: each round's candidate, rejected ones too, as a series
    path = reports / "new" / "report.json"
    body = json.loads(path.read_text())
    body["rounds"][2].update(status="rejected", candidate_exact={"ndcg@10": 0.28})
    body["rounds"][1]["candidate_exact"] = {"ndcg@10": 0.25}
    path.write_text(json.dumps(body))
    assert read()["series"][-1] == {
        "name": "candidate ndcg@10 (exact)",
        "values": [None, 0.25, 0.28],
    }

    # the two stages of each round's decision, with the candidate's true delta
    body["rounds"][2].update(
        live_exact={"ndcg@10": 0.25},
        offline={"verdict": "online", "improvement_per_query": 0.0123,
                 "improvement_lower_bound": -0.0045},
        online={"wins": 40, "losses": 61, "ties": 900, "searches": 1001, "decision": "rollback"},
    )  # fmt: skip
    path.write_text(json.dumps(body))
    assert read()["decisions"] == [
        {"round": 1, "offline": "-", "online": "-", "outcome": "promoted", "true_delta": None},
        {
            "round": 2,
            "offline": "online +0.0123 (LB -0.0045)",
            "online": "40/61/900 in 1001 searches: rollback",
            "outcome": "rejected",
            "true_delta": 0.03,
        },
    ]


def test_training_runs_are_the_trained_versions_newest_first(registry: LocalRegistry) -> None:
    runs = training_source(registry, shown=2)()["runs"]
    assert [(r["version"], r["parent"]) for r in runs] == [("v4", "v3"), ("v3", "v2")]


def test_tasks_come_from_the_store_as_dicts() -> None:
    class Task:
        def __init__(self, i: int) -> None:
            self.i = i

        def as_dict(self) -> dict[str, Any]:
            return {"id": f"t{self.i}", "status": "pending"}

    class Store:
        def list(self, status: Any = None, limit: int = 20, offset: int = 0) -> list[Task]:
            return [Task(i) for i in range(offset, offset + min(limit, 3))]

    assert tasks_source(Store(), limit=2)() == {
        "tasks": [{"id": "t0", "status": "pending"}, {"id": "t1", "status": "pending"}]
    }

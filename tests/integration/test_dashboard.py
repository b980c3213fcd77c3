"""`/dashboard` of a real `clicktune serve` in headless Chromium: two model versions, an A/B
experiment whose UBI records sit in the real OpenSearch, a demo report, records waiting in Kafka;
the page must show them all, draw its plots, follow new clicks, say which source broke, and
leave a screenshot."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnx")
pytest.importorskip("selenium")

from opensearchpy.helpers import bulk  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from clicktune.clients import kafka_options  # noqa: E402
from clicktune.demo.loop import RoundResult  # noqa: E402
from clicktune.demo.report import build_report  # noqa: E402
from ingest.templates import install_templates  # noqa: E402
from ingest.topics import ensure_topics  # noqa: E402
from serving.config import IndexSettings  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from serving.rollout.ab import (  # noqa: E402
    CANDIDATE,
    CONTROL,
    Arm,
    Experiment,
    ExperimentStore,
    new_experiment,
)
from tests.integration.browser_support import headless_chromium  # noqa: E402
from tests.integration.ingest_support import ingest_settings, produce, worker_env  # noqa: E402,F401
from tests.integration.serve_ready import running_serve  # noqa: E402
from tests.unit.serving.tiny_model import build_tiny_model  # noqa: E402
from tuner.simulator import event_record  # noqa: E402

ROUNDS = [0.30, 0.34, 0.37]  # nDCG@10 of the demo report's rounds
CLICK_RATE = {CONTROL: 0.2, CANDIDATE: 0.6}
QUERIES_PER_ARM = 60
WAITING_RECORDS = 3
ADMIN_TOKEN = "t-dash-admin"


def _registry(home: Path) -> LocalRegistry:
    registry = LocalRegistry(home / "models")
    for version, seed in (("v1", 0), ("v2", 1)):
        src = home / "src" / version
        build_tiny_model(src, seed=seed)
        if version == "v2":  # a trained version: lineage and validation metrics
            meta = json.loads((src / "clicktune.json").read_text())
            meta.update(
                parent="v1",
                created_at="2026-01-02T00:00:00+00:00",
                metrics={"sessions": 512, "pairs": 2048, "final_loss": 0.8, "val_ndcg@10": 0.42},
            )
            (src / "clicktune.json").write_text(json.dumps(meta))
        registry.add(src, version)
    registry.set_alias("production", "v1")
    registry.set_alias("candidate", "v2")
    return registry


def _ubi_records(
    experiment: Experiment, arm: str, n: int, seed: int
) -> tuple[list[dict], list[dict]]:
    """`n` logged searches of `arm` and the clicks simulated shoppers made on them."""
    rng, now = random.Random(seed), datetime.now(UTC)
    queries, events = [], []
    for i in range(n):
        query_id = f"{experiment.id}-{arm}-{seed}-{i}"
        hits = [f"d{rng.randrange(100)}" for _ in range(10)]
        queries.append(
            {
                "query_id": query_id,
                "timestamp": now.isoformat(),
                "client_id": f"u{seed}-{i}",
                "user_query": f"query {i}",
                "query_response_hit_ids": hits,
                "application": "clicktune",
                "query_attributes": {"experiment": experiment.id, "arm": arm},
            }
        )
        if rng.random() < CLICK_RATE[arm]:
            rank = min(int(rng.expovariate(0.7)), 9)
            at = now + timedelta(seconds=1)
            events.append(event_record("click", query_id, hits[rank], rank, f"u{i}", None, at))
    return queries, events


def _store_ubi(opensearch: Any, settings: Any, queries: list[dict], events: list[dict]) -> None:
    ingest = settings.ingest
    actions = [
        {"_index": ingest.queries_index, "_id": q["query_id"], "_source": q} for q in queries
    ]
    actions += [{"_index": ingest.events_index, "_source": e} for e in events]
    bulk(opensearch, actions, refresh="wait_for")


def _report(folder: Path) -> None:
    rounds = [
        RoundResult(i, f"v{i + 1}", {"ndcg@10": x, "mrr@10": x + 0.05, "recall@100": 2 * x})
        for i, x in enumerate(ROUNDS)
    ]
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(build_report("synthetic", rounds, {})))


@pytest.fixture()
def dashboard(services, opensearch, ingest_settings, unique, tmp_path) -> Iterator[dict]:  # type: ignore[no-untyped-def]  # noqa: F811
    home, name = tmp_path / "home", f"t-dash-{unique}"
    _registry(home)
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs.swap_alias(docs.create_version("v1", 8))
    experiment = new_experiment(
        Arm(CONTROL, "v1", name), Arm(CANDIDATE, "v2", f"{name}_candidate"), 0.5, "split"
    )
    ExperimentStore(home / "models").save(experiment)
    ingest = ingest_settings.ingest
    install_templates(opensearch, ingest.queries_index, ingest.events_index)
    for arm, seed in ((CONTROL, 1), (CANDIDATE, 2)):
        _store_ubi(
            opensearch, ingest_settings, *_ubi_records(experiment, arm, QUERIES_PER_ARM, seed)
        )
    _report(home / "reports" / "demo")
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_options(ingest_settings.kafka))
    ensure_topics(admin, [ingest.queries_topic], partitions=2, replication=1)
    admin.close()
    produce(ingest_settings, ingest.queries_topic, [b"{}"] * WAITING_RECORDS)  # not ingested yet

    env = {
        **worker_env(ingest_settings),
        "CLICKTUNE_HOME": str(home),
        "CLICKTUNE_KAFKA__CONTROL_TOPIC": f"{name}-control",
        "CLICKTUNE_SERVING__INDEX__ALIAS": name,
        "CLICKTUNE_SERVING__INDEX__PREFIX": name,
        "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "0",
        "CLICKTUNE_SERVING__HOT_SWAP__LISTEN_CONTROL": "false",
        "CLICKTUNE_SERVING__DASHBOARD__REPORTS_DIR": str(home / "reports"),
        "CLICKTUNE_SERVING__DASHBOARD__POLL_S": "1",
        "CLICKTUNE_SERVING__DASHBOARD__CACHE_S": "0",
        "CLICKTUNE_TUNER__WORKER__TASKS_INDEX": f"{name}-tasks",
        "CLICKTUNE_ADMIN__TOKEN": ADMIN_TOKEN,  # creating a task needs scope write
    }
    try:
        with running_serve(home, env) as url:
            yield {"url": url, "experiment": experiment, "settings": ingest_settings, "home": home}
    finally:
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})


def test_dashboard_in_headless_chromium(dashboard: dict, opensearch: Any, tmp_path: Path) -> None:
    task = httpx.post(
        f"{dashboard['url']}/api/v1/fine-tuning/task",
        json={"fine_tuning_method": "weighted-infonce", "idempotency_key": "dash-1"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert task.status_code in (200, 201), task.text
    data = httpx.get(f"{dashboard['url']}/dashboard/data", timeout=30).json()["panels"]
    arms = {a["name"]: a for a in data["ab"]["data"]["arms"]}
    assert arms[CONTROL]["queries"] == arms[CANDIDATE]["queries"] == QUERIES_PER_ARM, data["ab"]
    assert data["ingest"]["data"]["total_lag"] == WAITING_RECORDS, data["ingest"]

    with headless_chromium() as driver:
        driver.get(f"{dashboard['url']}/dashboard")
        page = WebDriverWait(driver, 30).until(lambda d: _rendered(d))
        for name in ("models", "ab", "uplift", "ingest", "training"):
            assert page[name]["ok"] == "true", (name, page[name]["text"])
        models = page["models"]["text"]
        assert "v1" in models and "v2" in models
        assert "production" in models and "in experiment" in models
        ab = page["ab"]
        assert "control" in ab["text"] and "candidate" in ab["text"]
        assert dashboard["experiment"].id in ab["text"] and "sequential test" in ab["text"]
        assert ab["interval_points"] == 4  # CTR and MRR, one estimate per arm
        heights = page["uplift"]["chart_points"]
        assert len(heights) == 3 * len(ROUNDS)  # nDCG@10, MRR@10, Recall@100 per round
        assert len(set(heights)) > 1  # drawn at their values, not all on one line
        assert page["ingest"]["total_lag"] == str(WAITING_RECORDS)
        assert "v2" in page["training"]["text"]
        assert page["tasks"]["ok"] == "true" and task.json()["id"] in page["tasks"]["text"]

        # live: new searches of the candidate arm show up on a later poll, without a reload
        more = _ubi_records(dashboard["experiment"], CANDIDATE, 15, seed=3)
        _store_ubi(opensearch, dashboard["settings"], *more)
        expected = str(QUERIES_PER_ARM + 15)
        WebDriverWait(driver, 30).until(lambda d: _arm_queries(_rendered(d), CANDIDATE) == expected)

        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))

        # a broken source: its panel says why, the others keep drawing, the page stays up
        (dashboard["home"] / "models" / "aliases.json").write_text("{not json")
        page = WebDriverWait(driver, 30).until(
            lambda d: (p := _rendered(d)) and p["models"]["ok"] == "false" and p
        )
        assert "unavailable: RegistryError" in page["models"]["text"]
        assert "aliases.json is not valid JSON" in page["models"]["text"]
        assert page["uplift"]["ok"] == "true"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    artifacts = os.environ.get("CLICKTUNE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "dashboard.png")


# One script, so the page cannot re-render (every poll_s) between reading two of its parts.
SNAPSHOT = """
if (!document.body.dataset.renders) return null;
const panels = {};
for (const s of document.querySelectorAll("section.panel")) {
  panels[s.id.replace("panel-", "")] = {
    ok: s.dataset.ok ?? null,
    text: s.innerText,
    interval_points: s.querySelectorAll("svg.intervals circle.point").length,
    chart_points: Array.from(s.querySelectorAll("svg.chart .point"), (c) => c.getAttribute("cy")),
    total_lag: s.querySelector(".total-lag")?.textContent ?? null,
    rows: [...s.querySelectorAll("tbody tr")].map((r) => [...r.cells].map((c) => c.textContent)),
  };
}
return panels;
"""


def _rendered(driver: Any) -> dict[str, dict[str, Any]] | None:
    """Every panel's state as the page shows it now; None before the first render."""
    return driver.execute_script(SNAPSHOT)


def _arm_queries(page: dict[str, dict[str, Any]] | None, arm: str) -> str | None:
    rows = page["ab"]["rows"] if page else []
    return next((row[3] for row in rows if row and row[0] == arm), None)

"""The admin API (bearer token, models, promote, rollback) and /metrics, on an in-memory app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.admin import admin_router
from serving.app import create_app
from serving.auth import Authenticator, Scope
from serving.config import ServingSettings
from serving.encoder import HashingEncoder
from serving.errors import ServingError
from serving.hotswap import HotSwapper
from serving.query_log import InMemoryQueryLog
from serving.registry import LocalRegistry
from serving.slot import ModelSlot
from tests.unit.serving.test_app import MemoryIndex
from tests.unit.serving.test_serving_hotswap import _loader, _version_dir

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Publisher:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.fail = False

    def publish(self, message: dict) -> None:
        if self.fail:
            raise ServingError("broker down")
        self.messages.append(message)


@pytest.fixture()
def parts(tmp_path: Path):  # type: ignore[no-untyped-def]
    registry = LocalRegistry(tmp_path / "models")
    for version, dimension in [("v1", 16), ("v2", 16), ("bad", 16)]:
        registry.add(_version_dir(tmp_path, version, dimension), version)
    registry.set_alias("production", "v1")
    encoder = HashingEncoder(16, "v1")
    slot = ModelSlot(encoder)
    swapper = HotSwapper(slot, registry, _loader, ["a b", "c"], expected_dimension=lambda: 16)
    return slot, swapper, MemoryIndex(encoder), Publisher()


def _client(parts, token: str | None = TOKEN) -> TestClient:  # type: ignore[no-untyped-def]
    slot, swapper, index, publisher = parts
    router = admin_router(swapper, publisher=publisher)
    tokens = {Scope.ADMIN: token, Scope.WRITE: "w-token"}
    app = create_app(
        slot,
        index,
        InMemoryQueryLog(),
        ServingSettings(),
        routers=[router],
        authenticator=Authenticator(tokens),
    )
    return TestClient(app)


@pytest.mark.parametrize(
    ("token", "headers", "status", "message"),
    [
        (None, AUTH, 503, "set CLICKTUNE_ADMIN__TOKEN"),
        (TOKEN, {}, 401, "Authorization: Bearer"),
        (TOKEN, {"Authorization": "Basic abc"}, 401, "Authorization: Bearer"),
        (TOKEN, {"Authorization": "Bearer wrong"}, 401, "matches no configured token"),
        (TOKEN, {"Authorization": "Bearer w-token"}, 403, "needs 'admin'"),
    ],
)
def test_admin_needs_the_token(parts, token, headers, status: int, message: str) -> None:
    answer = _client(parts, token).get("/admin/models", headers=headers)
    assert answer.status_code == status
    assert message in answer.json()["error"]["message"]


def test_admin_lists_versions_aliases_and_what_is_served(parts) -> None:
    body = _client(parts).get("/admin/models", headers=AUTH).json()
    assert [v["version"] for v in body["versions"]] == ["bad", "v1", "v2"]
    assert body["aliases"] == {"production": "v1"}
    assert body["serving"]["version"] == "v1" and body["serving"]["dimension"] == 16


def test_promote_swaps_moves_the_alias_and_tells_the_replicas(parts) -> None:
    client = _client(parts)
    answer = client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "v2" and answer.json()["published"] is True
    assert client.post("/v1/embeddings", json={"input": "a"}).json()["model"] == "v2"
    assert parts[3].messages == [{"type": "model_changed", "alias": "production", "version": "v2"}]
    back = client.post("/admin/models/rollback", headers=AUTH)
    assert back.status_code == 200 and back.json()["version"] == "v1"
    assert parts[1].registry.aliases()["production"] == "v1"
    again = client.post("/admin/models/rollback", headers=AUTH)
    assert again.status_code == 409 and "no previous version" in again.json()["error"]["message"]


def test_a_refused_promote_answers_409_and_keeps_serving(parts) -> None:
    client = _client(parts)
    answer = client.post("/admin/models/promote", json={"version": "bad"}, headers=AUTH)
    assert answer.status_code == 409 and "NaN" in answer.json()["error"]["message"]
    missing = client.post("/admin/models/promote", json={"version": "v9"}, headers=AUTH)
    assert missing.status_code == 409 and "unknown model 'v9'" in missing.text
    assert client.post("/v1/embeddings", json={"input": "a"}).json()["model"] == "v1"
    assert parts[1].registry.aliases()["production"] == "v1" and parts[3].messages == []


def test_promote_succeeds_when_the_control_topic_is_down(parts) -> None:
    parts[3].fail = True
    answer = _client(parts).post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["published"] is False and "broker down" in answer.json()["warning"]


def test_metrics_report_latency_batches_errors_and_the_served_version(parts) -> None:
    client = _client(parts)
    client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
    client.post("/v1/embeddings", json={"input": []})
    client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    text = client.get("/metrics").text
    assert 'clicktune_request_seconds_count{method="POST",route="/v1/embeddings"} 2.0' in text
    assert 'clicktune_request_errors_total{route="/v1/embeddings",status="422"} 1.0' in text
    assert 'clicktune_encode_batch_size_bucket{le="4.0",slot="production"} 1.0' in text
    assert 'clicktune_model_info{dimension="16",slot="production",version="v2"} 1.0' in text
    assert 'version="v1"' not in text


def test_hybrid_mode_without_a_hybrid_backend_is_refused(parts) -> None:
    answer = _client(parts).post("/v1/search", json={"query": "a", "mode": "hybrid"})
    assert answer.status_code == 422 and "hybrid" in answer.json()["error"]["message"]
    assert json.loads(_client(parts).get("/v1/models").text)["data"][0]["dimension"] == 16

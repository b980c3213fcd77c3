"""The admin API (bearer token, models, promote, rollback through the rollout) and /metrics,
on an in-memory app."""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.api.admin import admin_router
from serving.api.app import create_app
from serving.api.auth import Authenticator, Scope
from serving.config import ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import ServingError
from serving.models.registry import LocalRegistry
from serving.rollout.hotswap import HotSwapper
from serving.rollout.replicas import model_changed
from serving.rollout.rollout import Rollout
from serving.state.query_log import InMemoryQueryLog
from tests.unit.serving.index_fakes import FakeDocumentIndex, FakeReindex
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


@dataclass
class Parts:
    slot: ModelSlot
    swapper: HotSwapper
    index: MemoryIndex
    publisher: Publisher
    docs: FakeDocumentIndex
    reindex: FakeReindex
    rollout: Rollout

    def state(self) -> tuple[str | None, str | None, str | None]:
        """What a user would see move: the model served, the registry alias, the live index."""
        production = self.swapper.registry.aliases().get("production")
        return self.slot.version, production, self.docs.live


@pytest.fixture()
def parts(tmp_path: Path) -> Parts:
    registry = LocalRegistry(tmp_path / "models")
    for version in ["v1", "v2", "v3", "bad"]:
        registry.add(_version_dir(tmp_path, version, 16), version)
    registry.set_alias("production", "v1")
    docs = FakeDocumentIndex()
    docs.build("v1", live=True)
    for kept in ["v2", "bad"]:  # v3 has no index
        docs.build(kept)
    encoder = HashingEncoder(16, "v1")
    slot = ModelSlot(encoder)
    swapper = HotSwapper(slot, registry, _loader, ["a b", "c"], expected_dimension=lambda: 16)
    publisher, reindex = Publisher(), FakeReindex(docs)
    rollout = Rollout(registry, docs, reindex, publisher.publish)  # type: ignore[arg-type]
    return Parts(slot, swapper, MemoryIndex(encoder), publisher, docs, reindex, rollout)


def _client(parts: Parts, token: str | None = TOKEN, rollout: bool = True) -> TestClient:
    router = admin_router(
        parts.swapper, publisher=parts.publisher, rollout=parts.rollout if rollout else None
    )
    tokens = {Scope.ADMIN: token, Scope.WRITE: "w-token"}
    app = create_app(
        parts.slot,
        parts.index,
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
def test_admin_needs_the_token(parts: Parts, token, headers, status: int, message: str) -> None:
    answer = _client(parts, token).get("/admin/models", headers=headers)
    assert answer.status_code == status
    assert message in answer.json()["error"]["message"]


def test_admin_lists_versions_aliases_and_what_is_served(parts: Parts) -> None:
    body = _client(parts).get("/admin/models", headers=AUTH).json()
    assert [v["version"] for v in body["versions"]] == ["bad", "v1", "v2", "v3"]
    assert body["aliases"] == {"production": "v1"}
    assert body["serving"]["version"] == "v1" and body["serving"]["dimension"] == 16


def test_promote_moves_model_registry_alias_and_document_alias(parts: Parts) -> None:
    client = _client(parts)
    answer = client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["version"], body["index"], body["previous_index"]) == (
        "v2",
        "docs__v2__1",
        "docs__v1__1",
    )
    assert body["reindexed"] is False and body["published"] is True
    assert parts.state() == ("v2", "v2", "docs__v2__1")
    assert client.post("/v1/embeddings", json={"input": "a"}).json()["model"] == "v2"
    assert parts.publisher.messages == [model_changed("production", "v2")]
    assert parts.reindex.runs == []


def test_rollback_moves_the_document_alias_back(parts: Parts) -> None:
    client = _client(parts)
    client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    back = client.post("/admin/models/rollback", headers=AUTH)
    assert back.status_code == 200, back.text
    assert back.json()["version"] == "v1" and back.json()["index"] == "docs__v1__1"
    assert parts.state() == ("v1", "v1", "docs__v1__1")
    assert parts.publisher.messages[-1] == model_changed("production", "v1")
    again = client.post("/admin/models/rollback", headers=AUTH)
    assert again.status_code == 409 and "no previous version" in again.json()["error"]["message"]
    assert parts.state() == ("v1", "v1", "docs__v1__1")


@pytest.mark.parametrize("stale", [False, True], ids=["no-index", "stale-index"])
def test_promote_without_a_current_index_refuses_and_moves_nothing(
    parts: Parts, stale: bool
) -> None:
    if stale:
        parts.docs.build("v3", docs=2)  # the live index holds 3 documents
    answer = _client(parts).post("/admin/models/promote", json={"version": "v3"}, headers=AUTH)
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["type"] == "reindex_required"
    assert "model 'v3' needs a reindex" in error["message"]
    assert (
        "clicktune models promote v3" in error["message"] and '"reindex": true' in error["message"]
    )
    assert parts.state() == ("v1", "v1", "docs__v1__1")
    assert parts.swapper.registry.alias_history("production") == ["v1"]
    assert parts.publisher.messages == [] and parts.reindex.runs == []


def test_promote_with_reindex_true_reindexes_then_swaps(parts: Parts) -> None:
    body = {"version": "v3", "reindex": True}
    answer = _client(parts).post("/admin/models/promote", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["reindexed"] is True and answer.json()["index"] == "docs__v3__1"
    assert parts.reindex.runs == ["v3"]
    assert parts.state() == ("v3", "v3", "docs__v3__1")


def test_a_refused_promote_answers_409_and_keeps_serving(parts: Parts) -> None:
    client = _client(parts)
    answer = client.post("/admin/models/promote", json={"version": "bad"}, headers=AUTH)
    assert answer.status_code == 409 and "NaN" in answer.json()["error"]["message"]
    missing = client.post("/admin/models/promote", json={"version": "v9"}, headers=AUTH)
    assert missing.status_code == 409 and "unknown model 'v9'" in missing.text
    assert client.post("/v1/embeddings", json={"input": "a"}).json()["model"] == "v1"
    assert parts.state() == ("v1", "v1", "docs__v1__1")  # bad's kept index stayed idle
    assert parts.publisher.messages == []


def test_a_registry_alias_that_cannot_move_puts_the_document_alias_back(parts: Parts) -> None:
    parts.rollout.registry.lock_timeout_s = 0.05
    with (parts.rollout.registry.root / "registry.lock").open("a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another writer holds the registry
        answer = _client(parts).post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 409 and "registry.lock" in answer.json()["error"]["message"]
    assert parts.state() == ("v1", "v1", "docs__v1__1")


def test_without_a_document_alias_the_model_and_registry_alias_move(parts: Parts) -> None:
    parts.docs.live = None  # nothing indexed yet: no vectors to keep in step
    answer = _client(parts).post("/admin/models/promote", json={"version": "v3"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert parts.state() == ("v3", "v3", None)


def test_without_a_rollout_promote_moves_the_model_and_registry_alias(parts: Parts) -> None:
    client = _client(parts, rollout=False)
    answer = client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["published"] is True
    assert parts.state() == ("v2", "v2", "docs__v1__1")
    assert client.post("/admin/models/rollback", headers=AUTH).json()["version"] == "v1"
    assert parts.swapper.registry.aliases()["production"] == "v1"


def test_promote_succeeds_when_the_control_topic_is_down(parts: Parts) -> None:
    parts.publisher.fail = True
    answer = _client(parts).post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["published"] is False and "broker down" in answer.json()["warning"]


def test_metrics_report_latency_batches_errors_and_the_served_version(parts: Parts) -> None:
    client = _client(parts)
    client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
    client.post("/v1/embeddings", json={"input": []})
    client.post("/admin/models/promote", json={"version": "v2"}, headers=AUTH)
    text = client.get("/metrics").text
    assert 'clicktune_request_seconds_count{method="POST",route="/v1/embeddings"} 2.0' in text
    assert 'clicktune_request_errors_total{route="/v1/embeddings",status="422"} 1.0' in text
    assert 'clicktune_encode_batch_size_bucket{le="4.0",side="both",slot="production"} 1.0' in text
    assert 'clicktune_model_info{dimension="16",slot="production",version="v2"} 1.0' in text
    assert 'version="v1"' not in text


def test_hybrid_mode_without_a_hybrid_backend_is_refused(parts: Parts) -> None:
    answer = _client(parts).post("/v1/search", json={"query": "a", "mode": "hybrid"})
    assert answer.status_code == 422 and "hybrid" in answer.json()["error"]["message"]
    assert json.loads(_client(parts).get("/v1/models").text)["data"][0]["dimension"] == 16

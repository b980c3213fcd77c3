"""MlflowRegistry against a real MLflow tracking server (started by the services code)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from clicktune.services.mlflow import MlflowService
from serving.errors import ChecksumError, RegistryError, RegistryUnavailableError
from serving.models.mlflow_registry import MlflowRegistry
from serving.models.mlflow_rest import MlflowRest
from serving.models.model_manifest import MANIFEST
from tests.integration.mlflow_server import free_port, mlflow_server  # noqa: F401 - fixture
from tests.unit.serving.test_registry import model_dir

pytestmark = pytest.mark.integration


@pytest.fixture()
def model_name() -> str:
    return f"clicktune-{uuid4().hex[:8]}"  # one registered model per test on the shared server


@pytest.fixture()
def registry(
    mlflow_server: MlflowService,  # noqa: F811 - the fixture
    tmp_path: Path,
    model_name: str,
) -> Iterator[MlflowRegistry]:
    rest = MlflowRest(mlflow_server.address)
    yield MlflowRegistry(rest, tmp_path / "cache-writer", model_name)
    rest.close()


def _replica(server: MlflowService, cache: Path, model_name: str) -> MlflowRegistry:
    """Another process's view: the same registered model, its own (empty) cache."""
    return MlflowRegistry(MlflowRest(server.address), cache, model_name)


def _stored_file(server: MlflowService, model_name: str, name: str) -> Path:
    """The server's own copy of version 1's `name` (its source, under the artifacts folder):
    the server is shared by this module's tests, so searching the folder could find another's."""
    api = f"{server.address}/api/2.0/mlflow"
    raw = httpx.get(f"{api}/model-versions/get", params={"name": model_name, "version": "1"})
    source = raw.json()["model_version"]["source"]  # mlflow-artifacts:/<experiment>/<run>/...
    return server.artifacts / source.removeprefix("mlflow-artifacts:").lstrip("/") / name


def test_versions_and_aliases_live_in_mlflow_and_a_replica_downloads_checked_files(
    registry: MlflowRegistry,
    mlflow_server: MlflowService,  # noqa: F811
    tmp_path: Path,
    model_name: str,
) -> None:
    v1 = registry.add(model_dir(tmp_path / "m1"))
    v2 = registry.add(model_dir(tmp_path / "m2", dimension=16, parent="v1"))
    assert (v1.version, v2.version) == ("v1", "v2")
    registry.set_alias("production", "v1")
    registry.set_alias("production", "v2")
    registry.set_alias("candidate", "v2")

    # What MLflow itself holds: two model versions, the aliases, the history tag.
    api = f"{mlflow_server.address}/api/2.0/mlflow"
    model = httpx.get(f"{api}/registered-models/get", params={"name": model_name}).json()
    aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
    assert aliases == {"production": "2", "candidate": "2"}
    tags = {t["key"]: t["value"] for t in model["registered_model"]["tags"]}
    assert json.loads(tags["clicktune.alias_history.production"]) == ["v1", "v2"]

    replica = _replica(mlflow_server, tmp_path / "empty-cache", model_name)
    live = replica.get("production")
    assert (live.version, live.dimension, live.parent) == ("v2", 16, "v1")
    assert live.path == tmp_path / "empty-cache" / "versions" / "v2"
    assert (live.path / "model.onnx").read_bytes() == b"onnx"
    assert json.loads((live.path / "clicktune.json").read_text())["version"] == "v2"
    assert replica.aliases() == {"production": "v2", "candidate": "v2"}
    assert [v.version for v in replica.list()] == ["v1", "v2"]
    assert replica.alias_history("production") == ["v1", "v2"]

    assert replica.rollback_alias("production") == "v1"
    assert registry.get("production").version == "v1"
    assert registry.alias_history("production") == ["v1"]


def test_a_tampered_cache_is_downloaded_again_and_a_tampered_upload_refused(
    registry: MlflowRegistry,
    mlflow_server: MlflowService,  # noqa: F811
    tmp_path: Path,
    model_name: str,
) -> None:
    registry.add(model_dir(tmp_path / "m1"), "v1")
    registry.set_alias("production", "v1")
    cache = tmp_path / "replica"
    _replica(mlflow_server, cache, model_name).get("production")
    (cache / "versions" / "v1" / "model.onnx").write_bytes(b"tampered")
    fresh = _replica(mlflow_server, cache, model_name)  # a restarted replica checks its cache
    assert (fresh.get("v1").path / "model.onnx").read_bytes() == b"onnx"

    # The stored artifact itself changed behind the registry's back: refused, not served.
    stored = _stored_file(mlflow_server, model_name, "model.onnx")
    assert stored.read_bytes() == b"onnx"
    stored.write_bytes(b"evil")
    with pytest.raises(ChecksumError, match="model.onnx has sha256"):
        _replica(mlflow_server, tmp_path / "other", model_name).get("v1")
    stored.write_bytes(b"onnx")


def test_unknown_alias_names_the_alias_and_those_that_exist(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    registry.add(model_dir(tmp_path / "m1"), "base")
    registry.set_alias("production", "base")
    with pytest.raises(RegistryError) as caught:
        registry.get("prodution")
    message = str(caught.value)
    assert "'prodution'" in message and "['production']" in message and "['base']" in message
    assert registry.rest.url in message


def test_an_unreachable_server_fails_fast_naming_the_url_and_the_call(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    registry = MlflowRegistry(MlflowRest(url, retries=2, backoff_s=0.1), tmp_path, "clicktune")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.get("production")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert url in message and "/api/2.0/mlflow/" in message and "3 attempts" in message


def test_archive_hides_a_version_and_its_name_is_not_given_again(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    registry.add(model_dir(tmp_path / "m1"))
    registry.add(model_dir(tmp_path / "m2"))
    registry.set_alias("candidate", "v2")
    registry.archive("v2")
    assert [v.version for v in registry.list()] == ["v1"]
    assert registry.aliases() == {}
    assert registry.add(model_dir(tmp_path / "m3")).version == "v3"
    with pytest.raises(RegistryError, match="already exists"):
        registry.add(model_dir(tmp_path / "m4"), "v2")
    assert not (registry.cache.versions / "v2").exists()
    assert (registry.cache.versions / "v3" / MANIFEST).is_file()

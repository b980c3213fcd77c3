"""Choosing the registry backend, and the MLflow REST client's retries and errors (no server)."""

from __future__ import annotations

import pickle
from pathlib import Path

import httpx
import pytest

from clicktune.clients import model_registry
from clicktune.config import ConfigError, LocalServicesSettings, Settings, read_yaml
from serving.errors import MlflowApiError, RegistryError, RegistryUnavailableError
from serving.models.mlflow_registry import MlflowRegistry, _proxy_path
from serving.models.mlflow_rest import MlflowRest
from serving.models.registry import LocalRegistry
from serving.models.registry_config import RegistrySettings


def test_the_default_backend_is_the_local_folder(tmp_path: Path) -> None:
    registry = model_registry(Settings(home=tmp_path))
    assert isinstance(registry, LocalRegistry)
    assert registry.root == tmp_path / "models"


def test_backend_mlflow_talks_to_the_local_server_unless_a_url_is_configured(
    tmp_path: Path,
) -> None:
    local = Settings(
        home=tmp_path,
        services=LocalServicesSettings(mlflow_port=5123),
        registry=RegistrySettings(backend="mlflow"),
    )
    registry = model_registry(local)
    assert isinstance(registry, MlflowRegistry)
    assert registry.rest.url == "http://127.0.0.1:5123"
    assert registry.cache.root == tmp_path / "models" / "mlflow-cache"
    remote = local.model_copy(
        update={
            "registry": RegistrySettings(
                backend="mlflow",
                mlflow_url="https://mlflow.internal/",
                model_name="search-models",
                cache_dir=tmp_path / "cache",
            )
        }
    )
    registry = model_registry(remote)
    assert isinstance(registry, MlflowRegistry)
    assert (registry.rest.url, registry.model_name) == ("https://mlflow.internal", "search-models")
    assert registry.cache.root == tmp_path / "cache"


def test_the_mlflow_token_never_comes_from_a_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("registry:\n  mlflow_token: secret\n")
    with pytest.raises(ConfigError, match="CLICKTUNE_REGISTRY__MLFLOW_TOKEN"):
        read_yaml(config)


def test_a_bad_mlflow_url_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'mlflow:5000' must start with http"):
        RegistrySettings(mlflow_url="mlflow:5000")


def _rest(handler: httpx.MockTransport, retries: int = 2) -> MlflowRest:
    return MlflowRest("http://mlflow", retries=retries, backoff_s=0.0, transport=handler)


def test_an_mlflow_registry_pickles_for_ray_actors(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, registry=RegistrySettings(backend="mlflow"))
    registry = pickle.loads(pickle.dumps(model_registry(settings)))
    assert isinstance(registry, MlflowRegistry)
    assert registry.rest.url == "http://127.0.0.1:5000"
    assert not registry.rest._http.is_closed


def test_a_busy_server_is_retried_a_bounded_number_of_times() -> None:
    calls: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503)

    with pytest.raises(RegistryUnavailableError) as caught:
        _rest(httpx.MockTransport(busy)).get("registered-models/get", name="clicktune")
    assert len(calls) == 3
    message = str(caught.value)
    assert "http://mlflow" in message and "GET /api/2.0/mlflow/registered-models/get" in message
    assert "3 attempts" in message and "HTTP 503" in message


def test_a_refusal_is_not_retried_and_carries_mlflows_error_code() -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        body = {"error_code": "INVALID_PARAMETER_VALUE", "message": "alias 'latest' is reserved"}
        return httpx.Response(400, json=body)

    with pytest.raises(MlflowApiError) as caught:
        _rest(httpx.MockTransport(refuse)).post("registered-models/alias", {"alias": "latest"})
    assert len(calls) == 1
    assert caught.value.code == "INVALID_PARAMETER_VALUE"
    assert "alias 'latest' is reserved" in str(caught.value)


def test_artifacts_outside_the_proxy_are_refused_saying_how_to_serve_them() -> None:
    assert _proxy_path("mlflow-artifacts:/1/abc/artifacts/model", "v1") == "1/abc/artifacts/model"
    assert _proxy_path("mlflow-artifacts://host:5000/1/abc/artifacts", "v1") == "1/abc/artifacts"
    with pytest.raises(RegistryError, match="--serve-artifacts"):
        _proxy_path("s3://bucket/1/abc/artifacts/model", "v1")

"""A `clicktune serve` replica on the MLflow registry: started with an empty home it downloads and
serves the production model; it follows alias moves and rollbacks made in MLflow by another
process, and its admin promote moves the alias in MLflow."""

from __future__ import annotations

import os
import time
from pathlib import Path
from uuid import uuid4

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnx")

from clicktune.services.mlflow import MlflowService  # noqa: E402
from serving.config import IndexSettings  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.mlflow_registry import MlflowRegistry  # noqa: E402
from serving.models.mlflow_rest import MlflowRest  # noqa: E402
from tests.integration.mlflow_server import mlflow_server  # noqa: E402, F401 - fixture
from tests.integration.serve_ready import running_serve, serve_env  # noqa: E402
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector  # noqa: E402

TOKEN = "t-admin-token"
TARGET_READY_S = 30.0


def _wait_for(http: httpx.Client, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (served := http.get("/v1/models").json()["data"][0]["id"]) != version:
        assert time.monotonic() < deadline, f"still serving {served}, not {version}"
        time.sleep(0.5)


def _embeds_like(http: httpx.Client, table: np.ndarray) -> bool:
    answer = http.post("/v1/embeddings", json={"input": ["wing lift"]}).json()
    return bool(np.allclose(answer["data"][0]["embedding"], expected_vector(table, "wing lift")))


def test_an_empty_replica_serves_production_from_mlflow_and_follows_its_aliases(
    services,  # type: ignore[no-untyped-def]
    opensearch,
    mlflow_server: MlflowService,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"t-mlflow-{os.getpid()}-{uuid4().hex[:6]}"
    writer = MlflowRegistry(MlflowRest(mlflow_server.address), tmp_path / "writer", name)
    tables = {}
    for version, seed in [("v1", 0), ("v2", 1)]:
        tables[version] = build_tiny_model(tmp_path / "src" / version, seed=seed)
        writer.add(tmp_path / "src" / version, version)
    writer.set_alias("production", "v1")
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs.swap_alias(docs.create_version("v1", 8))
    docs.create_version("v2", 8)  # a kept index of v2: a promote needs no reindex

    home = tmp_path / "replica-home"
    home.mkdir()
    env = serve_env(
        home,
        name,
        services,
        CLICKTUNE_REGISTRY__BACKEND="mlflow",
        CLICKTUNE_REGISTRY__MLFLOW_URL=mlflow_server.address,
        CLICKTUNE_REGISTRY__MODEL_NAME=name,
        CLICKTUNE_SERVING__HOT_SWAP__POLL_S="1",
        CLICKTUNE_ADMIN__TOKEN=TOKEN,
    )
    try:
        started = time.monotonic()
        with running_serve(home, env) as url, httpx.Client(base_url=url, timeout=60) as http:
            ready_s = time.monotonic() - started
            print(f"replica with an empty cache ready in {ready_s:.1f} s")
            assert ready_s < TARGET_READY_S
            assert http.get("/v1/models").json()["data"][0]["id"] == "v1"
            assert _embeds_like(http, tables["v1"])
            cached = home / "models" / "mlflow-cache" / "versions" / "v1"
            assert (cached / "model.onnx").is_file()
            assert not (home / "models" / "versions").exists()  # nothing in the local registry

            writer.set_alias("production", "v2")  # another process moves the alias in MLflow
            _wait_for(http, "v2")
            assert _embeds_like(http, tables["v2"])
            assert writer.rollback_alias("production") == "v1"
            _wait_for(http, "v1")

            auth = {"Authorization": f"Bearer {TOKEN}"}
            promoted = http.post("/admin/models/promote", json={"version": "v2"}, headers=auth)
            assert promoted.status_code == 200, promoted.text
            assert writer.aliases()["production"] == "v2"
            assert writer.alias_history("production") == ["v1", "v2"]
            _wait_for(http, "v2")
    finally:
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})

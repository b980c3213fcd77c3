"""Shared fixtures. Integration tests talk to the real OpenSearch and Kafka named by the settings
(`CLICKTUNE_OPENSEARCH__URL`, `CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS`); when nothing answers there,
the `services` fixture starts the local ones with `clicktune services up`.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from clicktune.config import Settings, load_settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests without a tier marker are unit tests; gpu tests skip without CUDA."""
    has_cuda = _has_cuda()
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("integration", "slow", "gpu")):
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


def _opensearch_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_cluster/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def services(settings: Settings) -> Settings:
    """Make sure OpenSearch and Kafka answer; start the local ones if they do not."""
    if not _opensearch_healthy(settings.opensearch.url):
        subprocess.run([sys.executable, "-m", "clicktune", "services", "up"], check=True)
    return settings


@pytest.fixture(scope="session")
def opensearch(services: Settings):  # type: ignore[no-untyped-def]
    from clicktune.clients import opensearch_client

    client = opensearch_client(services.opensearch)
    client.cluster.health(wait_for_status="yellow", timeout=60)
    return client


@pytest.fixture()
def unique() -> str:
    """A short unique suffix for index and topic names, so tests never share state."""
    return uuid.uuid4().hex[:10]


@pytest.fixture()
def state_documents(opensearch, unique: str) -> Iterator:  # type: ignore[no-untyped-def]
    """`OpenSearchDocuments` over a real index of the test's own, no replicas, deleted after."""
    from serving.state.documents import OpenSearchDocuments

    index = f"t-state-{unique}"
    yield OpenSearchDocuments(opensearch, index, replicas=0)
    opensearch.indices.delete(index=index, ignore_unavailable=True)


@pytest.fixture()
def tmp_home(tmp_path, monkeypatch) -> Iterator:  # type: ignore[no-untyped-def]
    """An isolated $CLICKTUNE_HOME for the test."""
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    yield tmp_path


@pytest.fixture(
    params=["local", pytest.param("opensearch", marks=pytest.mark.integration)],
)
def batch_stores(request, tmp_path) -> Iterator:  # type: ignore[no-untyped-def]
    """A factory of batch stores over one storage, for each `serving.state.backend`: the
    folder `tmp_path/batches`, or a real OpenSearch index of its own (deleted afterwards).
    Each call is another instance, as another process or host would have."""
    from serving.state.documents import OpenSearchDocuments
    from tuner.batch_store import OpenSearchBatchStore
    from tuner.batches import BatchStore

    if request.param == "local":
        yield lambda: BatchStore(tmp_path / "batches")
        return
    shared = request.getfixturevalue("state_documents")
    yield lambda: OpenSearchBatchStore(OpenSearchDocuments(shared.client, shared.index), "docs")

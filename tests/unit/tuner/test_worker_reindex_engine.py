"""The worker's reindex stage runs on the engine of `serving.reindex.engine`, as
`clicktune reindex` does: with `ray`, the copy goes to the Ray copier (here a fake, no cluster)
while the stage keeps its progress lines and its candidate alias."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clicktune.cli import index as cli_index
from clicktune.cli import reindex_ray
from clicktune.config import load_settings
from serving.config import IndexSettings
from serving.encoders.encoder import HashingEncoder
from serving.index import ray_cluster
from serving.index.reindex_checkpoints import Checkpoint, CheckpointStore
from serving.index.vector_index import DocumentIndex
from tests.unit.serving.opensearch_memory import MemoryOpenSearch
from tuner.progress import ProgressLog, reporting
from tuner.worker.stages import LoopStages

TEXTS = {f"d{i}": text for i, text in enumerate(["wing lift", "heat shock", "flow", "drag"])}


class FakeRayCopier:
    """Copies the source two documents a page, saving the checkpoint after each, as the
    `RayCopier`'s slice ledger does; records the cluster and model it was made for."""

    def __init__(self, client: MemoryOpenSearch, ray: Any, model: str) -> None:
        self.client, self.ray, self.model = client, ray, model
        self.copied: list[str] = []

    def copy(self, checkpoint: Checkpoint, store: CheckpointStore) -> None:
        source = sorted(self.client.docs[checkpoint.source].items())
        for start in range(0, len(source), 2):
            for doc_id, doc in source[start : start + 2]:
                self.client.docs[checkpoint.target][doc_id] = {**doc, "embedding": [1.0]}
                checkpoint.written += 1
            store.save(checkpoint)
        self.copied.append(checkpoint.target)


def _ray_stages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> tuple[LoopStages, MemoryOpenSearch, list[Any]]:
    """Stages built as `clicktune tuner run` builds them, with `serving.reindex.engine` set to
    `engine`, over an in-memory OpenSearch; the Ray cluster and copier are fakes."""
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("CLICKTUNE_SERVING__REINDEX__ENGINE", engine)
    settings = load_settings()
    client = MemoryOpenSearch()
    client.add_index("docs__v1__1", {i: {"text": t, "embedding": [0.0]} for i, t in TEXTS.items()})
    client.aliases["docs__v1__1"].add("docs")
    docs = DocumentIndex(client, IndexSettings())  # type: ignore[arg-type]
    made: list[Any] = []  # the copiers made, then the clusters left

    @contextmanager
    def fake_cluster(ray_settings: Any) -> Iterator[Any]:
        yield SimpleNamespace(address=ray_settings.address)
        made.append("cluster left")

    def fake_copier(_: Any, ray: Any, model: str, *args: Any, **kwargs: Any) -> FakeRayCopier:
        made.append(FakeRayCopier(client, ray, model))
        return made[-1]

    monkeypatch.setattr(ray_cluster, "ray_cluster", fake_cluster)
    monkeypatch.setattr(reindex_ray, "ray_copier", fake_copier)
    monkeypatch.setattr(cli_index, "_doc_index", lambda _: docs)
    monkeypatch.setattr(cli_index, "model_encoder", lambda _, model: HashingEncoder(16, model))
    stages = LoopStages(
        context=None,  # type: ignore[arg-type]
        settings=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        doc_index=docs,
        checkpoints=settings.home / "reindex",
        reindexers=partial(cli_index.engine_reindexer, settings, progress=False),
        experiments=None,  # type: ignore[arg-type]
        ab_settings=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        ubi_indexes=("q", "e"),
    )
    return stages, client, made


def test_the_worker_reindexes_on_ray_when_the_configuration_says_ray(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stages, client, made = _ray_stages(monkeypatch, tmp_path, "ray")
    lines: list[str] = []
    with reporting(ProgressLog(say=lines.append, interval_s=0.0)):
        index = stages.reindex("v2")

    copier = made[0]
    assert isinstance(copier, FakeRayCopier) and made[1:] == ["cluster left"]
    assert (copier.model, copier.copied) == ("v2", [index])
    assert index == "docs__v2__1" and client.aliases[index] == {"docs_candidate"}
    assert client.docs[index]["d3"]["embedding"] == [1.0]  # the copier's vectors, not re-embedded
    assert lines[0] == "stage=reindexing doc=0/4 started"
    assert [line.split()[1] for line in lines[1:]] == ["doc=2/4", "doc=4/4", "doc=4/4"]
    assert "done in" in lines[-1]


def test_the_worker_reindexes_in_process_when_the_configuration_says_local(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stages, client, made = _ray_stages(monkeypatch, tmp_path, "local")
    index = stages.reindex("v2")
    assert made == [] and client.aliases[index] == {"docs_candidate"}
    assert client.docs[index]["d3"]["embedding"] != [1.0]  # embedded here, by v2's encoder

"""The Ray reindex engine against the real OpenSearch and a real local Ray cluster (2 CPUs):
the same vectors as the local engine, every document once, and a slice resumed after its actor
was killed mid-slice."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from clicktune.clients import opensearch_client
from serving.config import IndexSettings, RaySettings
from serving.encoders.encoder import HashingEncoder
from serving.errors import ReindexError
from serving.index.indexer import index_corpus
from serving.index.reindex import Reindexer
from serving.index.vector_index import DocumentIndex
from tests.integration.ray_support import onnx_encoder, slow_onnx_encoder, tiny_onnx_model

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray", reason="the Ray engine needs the extra clicktune[scale]")

from serving.index.ray_cluster import ray_cluster  # noqa: E402 - after the skip
from serving.index.reindex_ray import RayCopier, actor_name  # noqa: E402

WORDS = ["wing", "lift", "drag", "boundary", "layer", "flow", "heat", "shock"]  # tiny's vocabulary
BATCH = 5


@pytest.fixture(scope="module")
def local_ray() -> Iterator:
    with ray_cluster(RaySettings(local_cpus=2)) as connected:
        yield connected


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return tiny_onnx_model(tmp_path / "tiny-v2", "v2")


def _namespace(opensearch, name: str, n: int) -> DocumentIndex:  # type: ignore[no-untyped-def]
    settings = IndexSettings(alias=name, prefix=name, bulk_batch_size=BATCH, image_field=None)
    doc_index = DocumentIndex(opensearch, settings)
    index_corpus(_corpus(n), HashingEncoder(16, "v1"), doc_index, progress=False)
    return doc_index


@pytest.fixture()
def namespaces(opensearch, unique: str) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    names: list[str] = []
    yield names
    for name in names:
        opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})


def _corpus(n: int) -> list[dict]:
    rng = random.Random(5)
    return [
        {
            "_id": f"d{i:04d}",
            "title": " ".join(rng.choices(WORDS, k=2)),
            "text": " ".join(rng.choices(WORDS, k=6)),
        }
        for i in range(n)
    ]


def _stored(doc_index: DocumentIndex, index: str) -> dict[str, tuple[int, list[float]]]:
    """Every document of `index`: id -> (its _version, its vector)."""
    body = {"size": 10_000, "version": True, "query": {"match_all": {}}}
    hits = doc_index.client.search(index=index, body=body)["hits"]["hits"]
    return {h["_id"]: (h["_version"], h["_source"]["embedding"]) for h in hits}


def _ray_reindexer(
    doc_index: DocumentIndex, home: Path, make_encoder, settings, actors: int = 2, retries: int = 3
) -> tuple[Reindexer, RayCopier]:  # type: ignore[no-untyped-def]
    copier = RayCopier(
        ray,
        doc_index.client,
        partial(opensearch_client, settings.opensearch),
        make_encoder,
        doc_index.settings,
        RaySettings(
            actors=actors, slices_per_actor=2, slice_retries=retries, actors_ready_timeout_s=60
        ),
        batch_size=BATCH,
        progress=False,
    )
    encoder = make_encoder()  # the driver's: names the index and reconciles
    reindexer = Reindexer(doc_index, encoder, home, batch_size=BATCH, progress=False, copier=copier)
    return reindexer, copier


def test_the_ray_engine_writes_every_document_once_with_the_local_engines_vectors(
    local_ray, opensearch, unique: str, namespaces: list[str], model: Path, tmp_path: Path, settings
) -> None:
    n = 120
    namespaces += [f"t-rr-local-{unique}", f"t-rr-ray-{unique}"]
    local, on_ray = (_namespace(opensearch, name, n) for name in namespaces)
    Reindexer(
        local, onnx_encoder(model), tmp_path / "local", batch_size=BATCH, progress=False
    ).run()
    reindexer, copier = _ray_reindexer(
        on_ray, tmp_path / "ray", partial(onnx_encoder, model), settings
    )

    report = reindexer.run()

    assert report.docs == n and on_ray.live_index() == report.index
    assert copier.last_run is not None and copier.last_run.slices == 4
    by_ray, by_local = _stored(on_ray, report.index), _stored(local, local.live_index())
    assert sorted(by_ray) == sorted(by_local) == [d["_id"] for d in _corpus(n)]
    assert {version for version, _ in by_ray.values()} == {1}  # each written once
    for doc_id, (_, vector) in by_local.items():
        np.testing.assert_allclose(by_ray[doc_id][1], vector, atol=1e-6)
    assert not opensearch.indices.exists_alias(name=on_ray.settings.next_alias)
    assert not (tmp_path / "ray" / f"{on_ray.alias}.json").exists()  # checkpoint cleared


def test_a_slice_whose_actor_is_killed_mid_slice_resumes_from_its_last_page(
    local_ray, opensearch, unique: str, namespaces: list[str], model: Path, tmp_path: Path, settings
) -> None:
    n = 200
    namespaces.append(f"t-rr-kill-{unique}")
    doc_index = _namespace(opensearch, namespaces[0], n)
    reindexer, copier = _ray_reindexer(
        doc_index, tmp_path, partial(slow_onnx_encoder, model, 0.1), settings
    )
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(report=reindexer.run()))
    runner.start()
    checkpoint = tmp_path / f"{doc_index.alias}.json"
    killed_at = _kill_worker_mid_slice(checkpoint, worker=0, after_docs=5 * BATCH)
    runner.join(timeout=120)

    report = result["report"]
    stored = _stored(doc_index, report.index)
    assert sorted(stored) == [d["_id"] for d in _corpus(n)] and report.docs == n
    assert {version for version, _ in stored.values()} == {1}  # none written twice
    assert copier.last_run is not None and copier.last_run.resumed >= 1
    # resumed from its last saved page: only the pages in flight at the kill are read again
    # (a restart from the slice's start would read at least `killed_at` documents again)
    assert copier.last_run.existing < killed_at


def test_a_run_that_lost_an_actor_for_good_resumes_from_every_slices_checkpoint(
    local_ray, opensearch, unique: str, namespaces: list[str], model: Path, tmp_path: Path, settings
) -> None:
    """No retries left: the run stops with the slices' progress saved, and `--resume` (a new
    run, a new point in time) goes on from there."""
    n = 200
    namespaces.append(f"t-rr-resume-{unique}")
    doc_index = _namespace(opensearch, namespaces[0], n)
    slow = partial(slow_onnx_encoder, model, 0.1)
    first, _ = _ray_reindexer(doc_index, tmp_path, slow, settings, retries=0)
    failed: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run()
        except ReindexError as exc:
            failed.append(exc)

    runner = threading.Thread(target=run_first)
    runner.start()
    checkpoint = tmp_path / f"{doc_index.alias}.json"
    _kill_worker_mid_slice(checkpoint, worker=0, after_docs=5 * BATCH, restart=False)
    runner.join(timeout=120)
    assert failed and "--resume" in str(failed[0])
    saved = json.loads(checkpoint.read_text())
    assert 0 < saved["written"] < n

    second, copier = _ray_reindexer(doc_index, tmp_path, partial(onnx_encoder, model), settings)
    report = second.run(resume=True)

    stored = _stored(doc_index, report.index)
    assert sorted(stored) == [d["_id"] for d in _corpus(n)] and report.docs == n
    assert {version for version, _ in stored.values()} == {1}
    assert copier.last_run is not None and copier.last_run.existing < saved["written"]
    assert copier.last_run.slices == sum(not s["done"] for s in saved["slices"])


def _kill_worker_mid_slice(
    checkpoint: Path, worker: int, after_docs: int, restart: bool = True
) -> int:
    """Kill actor `worker` (Ray restarts it when `restart`) once its slice has `after_docs`
    documents written; return that slice's count at the kill."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            saved = json.loads(checkpoint.read_text())
        except (OSError, ValueError):
            saved = {}
        for state in saved.get("slices") or []:
            if state["worker"] == worker and not state["done"] and state["written"] >= after_docs:
                actor = ray.get_actor(actor_name(saved["target"], worker))
                ray.kill(actor, no_restart=not restart)
                return int(state["written"])
        time.sleep(0.01)
    raise AssertionError(f"no slice of worker {worker} reached {after_docs} documents in time")


def test_clicktune_reindex_engine_ray_reindexes_a_registry_model_onto_the_alias(
    local_ray,
    opensearch,
    unique: str,
    namespaces: list[str],
    model: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:  # type: ignore[no-untyped-def]
    """The command's composition: the model travels to the actors as a registry path and the
    OpenSearch settings as a client factory (the cluster this process joined is reused)."""
    from typer.testing import CliRunner

    from clicktune.cli import app
    from serving.models.registry import LocalRegistry

    n, name = 40, f"t-rr-cli-{unique}"
    namespaces.append(name)
    doc_index = _namespace(opensearch, name, n)
    LocalRegistry(tmp_path / "models").add(model, version="v2")
    for key, value in {
        "HOME": str(tmp_path),
        "SERVING__INDEX__ALIAS": name,
        "SERVING__INDEX__PREFIX": name,
        "SERVING__INDEX__BULK_BATCH_SIZE": str(BATCH),
        "SERVING__ENCODER__RUNTIME": "onnxruntime",
    }.items():
        monkeypatch.setenv(f"CLICKTUNE_{key}", value)

    copies: list[int] = []
    real_copy = RayCopier.copy

    def counted(copier: RayCopier, checkpoint, store) -> None:  # type: ignore[no-untyped-def]
        real_copy(copier, checkpoint, store)
        copies.append(copier.settings.actors)

    monkeypatch.setattr(RayCopier, "copy", counted)
    args = ["reindex", "--model", "v2", "--engine", "ray", "--actors", "2", "--json"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert copies == [2]  # the copy ran on the Ray engine, with the command line's actors
    report = json.loads(result.output)
    assert (report["docs"], report["index"]) == (n, f"{name}__v2__1")
    assert doc_index.live_index() == f"{name}__v2__1"
    stored = _stored(doc_index, report["index"])
    expected = onnx_encoder(model).encode([f"{d['title']} {d['text']}" for d in _corpus(n)])
    np.testing.assert_allclose([stored[d["_id"]][1] for d in _corpus(n)], expected, atol=1e-6)

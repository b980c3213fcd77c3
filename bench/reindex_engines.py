"""`python -m bench.reindex --engines`: the local reindex engine against the Ray engine with 1
and 2 actors, on the same documents of a real collection, in one run.

Each engine re-embeds its own copy of the source index (same documents, hashing vectors) with
the same model. docs/s is documents over the reindex's wall time (index creation, copy,
reconcile, swap) less, for Ray, the actors' start-up (placing them and loading the model once:
a one-off that does not grow with the corpus; printed beside). Targets (issue #21): Ray with 2
actors >= 1.7 x the local engine, and docs/s per actor with 2 actors >= 0.9 x with 1 (flat).
The projection for 10 million documents is the measured per-actor rate x actors.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.results import BenchResult
from clicktune.cli.reindex_ray import ray_copier
from serving.config import IndexSettings
from serving.encoders.encoder import HashingEncoder
from serving.index.corpus import read_corpus
from serving.index.ray_cluster import ray_cluster
from serving.index.reindex import Reindexer
from serving.index.vector_index import DocumentIndex

TEN_MILLION = 10_000_000
DEFAULT_CORPUS = Path("/work/shared/data/cranfield")  # read in place, never copied here


def load_docs(path: Path, n: int) -> list[dict[str, Any]]:
    docs = list(itertools.islice(read_corpus(path), n))
    if not docs:
        raise SystemExit(f"no documents in {path}")
    return docs


def _source(client: Any, docs: list[dict], batch: int) -> DocumentIndex:
    """A fresh alias over `docs` with cheap hashing vectors: what a reindex starts from."""
    name = f"bench-eng-{uuid.uuid4().hex[:8]}"
    settings = IndexSettings(alias=name, prefix=name, bulk_batch_size=batch, image_field=None)
    doc_index = DocumentIndex(client, settings)
    index = doc_index.create_version("src", 32)
    texts = [f"{d.get('title', '')} {d.get('text', '')}" for d in docs]
    doc_index.bulk_index(index, docs, HashingEncoder(32, "src").encode(texts))
    doc_index.refresh(index)
    doc_index.swap_alias(index)
    return doc_index


def _timed(reindexer: Reindexer, n: int) -> float:
    started = time.perf_counter()
    report = reindexer.run()
    seconds = time.perf_counter() - started
    assert report.docs == n, report
    return seconds


def bench_engines(
    settings: Any, client: Any, model: str, encoder: Any, docs: list[dict], batch: int
) -> BenchResult:
    """Local, then Ray with 1 and 2 actors (a local cluster of 2 CPUs), on `docs`; `encoder`
    is registry model `model` of `settings.home`."""
    n, result = len(docs), BenchResult("reindex_engines")
    created: list[DocumentIndex] = []
    try:
        with tempfile.TemporaryDirectory() as home:
            created.append(_source(client, docs, batch))
            local = Reindexer(created[-1], encoder, Path(home), batch_size=batch, progress=False)
            local_s = _timed(local, n)
            rates: dict[int, float] = {}
            startup: dict[int, float] = {}
            ray_settings = settings.serving.reindex.ray.model_copy(update={"local_cpus": 2})
            with ray_cluster(ray_settings) as ray:
                for actors in (1, 2):
                    created.append(_source(client, docs, batch))
                    run = settings.model_copy(deep=True)
                    run.serving.reindex.ray.actors = actors
                    run.serving.index.bulk_batch_size = batch
                    copier = ray_copier(run, ray, model, encoder, client, progress=False)
                    reindexer = Reindexer(
                        created[-1],
                        encoder,
                        Path(home),
                        batch_size=batch,
                        progress=False,
                        copier=copier,
                    )
                    seconds = _timed(reindexer, n)
                    startup[actors] = copier.startup_s
                    rates[actors] = n / (seconds - copier.startup_s)
    finally:
        for doc_index in created:
            client.indices.delete(
                index=f"{doc_index.settings.prefix}__*", params={"expand_wildcards": "all"}
            )
    _report(result, n / local_s, rates, startup)
    result.params.update(model=encoder.version, docs=n, batch=batch, ray_cpus=2)
    return result


def _report(
    result: BenchResult, local: float, rates: dict[int, float], startup: dict[int, float]
) -> None:
    per_actor = {a: rate / a for a, rate in rates.items()}
    result.add("local", local, "docs/s")
    for actors, rate in rates.items():
        result.add(f"ray_{actors}_actors", rate, "docs/s")
        result.add(f"ray_{actors}_actors_startup", startup[actors], "s")
    result.add_ratio("ray2_over_local", rates[2] / local, ">=1.7")
    result.add_ratio("per_actor_2_over_1", per_actor[2] / per_actor[1], ">=0.9")
    core_hours = TEN_MILLION / per_actor[1] / 3600
    result.add("projected_10m_docs_one_core", core_hours, "h")
    print(f"local engine         {local:8.1f} docs/s")
    for actors, rate in rates.items():
        print(
            f"ray, {actors} actor{'s' if actors > 1 else ' '}       {rate:8.1f} docs/s   "
            f"{per_actor[actors]:.1f} per actor (start-up {startup[actors]:.1f} s, not counted)"
        )
    print(f"ray 2 actors / local {rates[2] / local:8.2f}   (target >= 1.7)")
    print(f"per actor, 2 / 1     {per_actor[2] / per_actor[1]:8.2f}   (target >= 0.9: flat)")
    print(
        f"10 million documents: {core_hours:.1f} h on one CPU core (1 actor's rate), "
        f"{core_hours / 16:.1f} h on 16 cores; per GPU: not measured (no GPU here)"
    )

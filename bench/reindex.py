"""Reindex throughput beside encode-only and plain bulk, and `/v1/search` latency.

    .venv/bin/python -m bench.reindex [--docs 3000] [--model production|hashing]
                                       [--import-base] [--search-docs 100000] [--searches 500]
                                       [--json FILE]
    .venv/bin/python -m bench.reindex --engines [--corpus DIR] [--docs N] [--import-base]

1. a source index of `--docs` synthetic documents (hashing fake encoder: the source vectors do
   not matter, the reindex re-embeds them);
2. encode-only docs/s: the same texts through the model, in the same batch size;
3. reindex docs/s (`serving.index.reindex.Reindexer`: PIT read, encode overlapped with bulk writes,
   checkpoints, reconcile, swap) and its ratio to encode-only (target >= 0.85);
4. plain opensearch-py `helpers.bulk` of the precomputed vectors into a fresh index;
5. `/v1/search` p50/p99 (in-process app, real OpenSearch) over `--search-docs` documents whose
   vectors come from the fast hashing encoder (the real model would take hours on this CPU).
Everything it creates is deleted at the end. The model is `--model` of the registry under
CLICKTUNE_HOME; `--import-base` imports the configured base model (all-MiniLM-L6-v2) into a
temporary registry instead, as `clicktune models import` would, so the bench needs no prepared
home. `--json FILE` writes the figures in the shape of `bench/results.py`.

`--engines` runs instead the local engine against the Ray engine with 1 and 2 actors on the
first `--docs` documents of a real collection (bench/reindex_engines.py).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from opensearchpy.helpers import bulk

from bench.results import BenchResult
from clicktune.clients import opensearch_client
from clicktune.config import load_settings
from serving.api.app import create_app
from serving.config import IndexSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder, OnnxTextEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import RegistryError
from serving.index.corpus import document_text
from serving.index.reindex import Reindexer
from serving.index.vector_index import DocumentIndex
from serving.models.registry import LocalRegistry
from serving.state.query_log import InMemoryQueryLog

WORDS = [
    "wing",
    "lift",
    "drag",
    "flow",
    "shock",
    "heat",
    "layer",
    "boundary",
    "plate",
    "jet",
    "pressure",
    "laminar",
    "turbulent",
    "mach",
    "supersonic",
    "nozzle",
    "vortex",
    "airfoil",
    "panel",
    "buckling",
    "stress",
    "cone",
]


def synthetic_docs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "_id": f"b{i:07d}",
            "title": " ".join(rng.choices(WORDS, k=5)),
            "text": " ".join(rng.choices(WORDS, k=40)),
        }
        for i in range(n)
    ]


def load_model(settings, ref: str, registry_root: Path):  # type: ignore[no-untyped-def]
    """The encoder `ref` names in the registry at `registry_root` ('hashing': the fake one)."""
    if ref == "hashing":
        return HashingEncoder(384, "hashing")
    try:
        version = LocalRegistry(registry_root).get(ref)
    except RegistryError as exc:
        raise SystemExit(
            f"{exc}; run `clicktune models import`, or pass --import-base or --model hashing"
        ) from exc
    return OnnxTextEncoder.from_dir(version.path, settings.serving.encoder)


def import_base(settings, root: Path) -> Path:  # type: ignore[no-untyped-def]
    """A registry at `root` holding the configured base model as `base` (alias `production`)."""
    from tuner.publish import import_model  # torch: only when asked for

    registry = LocalRegistry(root)
    started = time.perf_counter()
    import_model(registry, settings.tuner.train.base_model)
    print(f"imported {settings.tuner.train.base_model} in {time.perf_counter() - started:.0f} s")
    return root


def bench_reindex(settings, client, encoder, n: int, batch: int, result: BenchResult) -> None:  # type: ignore[no-untyped-def]
    name = f"bench-ri-{uuid.uuid4().hex[:8]}"
    doc_index = DocumentIndex(client, IndexSettings(alias=name, prefix=name, bulk_batch_size=batch))
    docs = synthetic_docs(n)
    fake = HashingEncoder(32, "src")
    texts = [document_text(d, ["title", "text"]) for d in docs]
    try:
        source = doc_index.create_version("src", 32)
        doc_index.bulk_index(source, docs, fake.encode(texts))
        doc_index.refresh(source)
        doc_index.swap_alias(source)

        started = time.perf_counter()
        vectors = np.concatenate([encoder.encode(texts[i : i + batch]) for i in range(0, n, batch)])
        encode_s = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as home:
            started = time.perf_counter()
            report = Reindexer(
                doc_index, encoder, Path(home), batch_size=batch, progress=False
            ).run()
            reindex_s = time.perf_counter() - started
        assert report.docs == n, report

        plain = f"{name}__plain__1"
        client.indices.create(index=plain, body=doc_index._index_body("plain", encoder.dimension))
        actions = (
            {
                "_index": plain,
                "_id": d["_id"],
                "_source": {"title": d["title"], "text": d["text"], "embedding": v.tolist()},
            }
            for d, v in zip(docs, vectors, strict=True)
        )
        started = time.perf_counter()
        bulk(client, actions, chunk_size=batch)
        client.indices.refresh(index=plain)
        bulk_s = time.perf_counter() - started
    finally:
        client.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})
    result.params.update(model=encoder.version, dimension=encoder.dimension, docs=n, batch=batch)
    result.add("encode_only", n / encode_s, "docs/s")
    result.add("reindex", n / reindex_s, "docs/s")
    result.add("helpers_bulk_precomputed", n / bulk_s, "docs/s")
    result.add_ratio("reindex_over_encode_only", encode_s / reindex_s, ">=0.85")
    print(f"model {encoder.version} (dim {encoder.dimension}), {n} docs, batch {batch}")
    print(f"  encode only      {n / encode_s:9.1f} docs/s")
    print(
        f"  reindex          {n / reindex_s:9.1f} docs/s   "
        f"ratio to encode-only {encode_s / reindex_s:.2f} (target >= 0.85)"
    )
    print(f"  helpers.bulk     {n / bulk_s:9.1f} docs/s   (precomputed vectors, no encoding)")


def bench_search(client, n: int, searches: int, result: BenchResult) -> None:  # type: ignore[no-untyped-def]
    name = f"bench-se-{uuid.uuid4().hex[:8]}"
    settings = IndexSettings(alias=name, prefix=name, bulk_batch_size=2000)
    doc_index = DocumentIndex(client, settings)
    encoder = HashingEncoder(384, "hashing")
    try:
        index = doc_index.create_version("hashing", 384)
        started = time.perf_counter()
        for start in range(0, n, 5000):
            docs = synthetic_docs(min(5000, n - start), seed=start)
            for d in docs:
                d["_id"] = f"{start}-{d['_id']}"
            doc_index.bulk_index(
                index, docs, encoder.encode([document_text(d, ["title", "text"]) for d in docs])
            )
        doc_index.refresh(index)
        doc_index.swap_alias(index)
        build_s = time.perf_counter() - started
        api = TestClient(
            create_app(
                ModelSlot(encoder), doc_index, InMemoryQueryLog(), ServingSettings(index=settings)
            )
        )
        rng = random.Random(1)
        for _ in range(20):  # warm-up
            api.post("/v1/search", json={"query": " ".join(rng.choices(WORDS, k=4))})
        latencies = []
        for _ in range(searches):
            query = " ".join(rng.choices(WORDS, k=4))
            started = time.perf_counter()
            assert api.post("/v1/search", json={"query": query, "k": 10}).status_code == 200
            latencies.append(1000 * (time.perf_counter() - started))
    finally:
        client.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})
    p50, p99 = np.percentile(latencies, [50, 99])
    result.params.update(search_docs=n, searches=searches, search_encoder="hashing-384")
    result.add("search_index_build", build_s, "s")
    result.add("search_p50", float(p50), "ms")
    result.add("search_p99", float(p99), "ms")
    print(f"/v1/search over {n} docs (hashing encoder, dim 384; index built in {build_s:.0f} s)")
    print(f"  {searches} searches: p50 {p50:.1f} ms  p99 {p99:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", default="production", help="registry ref, or 'hashing'")
    parser.add_argument("--search-docs", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument(
        "--import-base", action="store_true", help="bench the base model in a temporary registry"
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--engines",
        action="store_true",
        help="instead: the local engine against Ray with 1 and 2 actors (bench/reindex_engines.py)",
    )
    parser.add_argument(
        "--corpus", type=Path, default=None, help="--engines: dataset dir or JSONL (cranfield)"
    )
    args = parser.parse_args()
    settings = load_settings()
    client = opensearch_client(settings.opensearch, timeout=120)
    result = BenchResult("reindex")
    with contextlib.ExitStack() as stack:
        root = settings.home / "models"
        if args.import_base:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ri-registry-"))
            root = import_base(settings, Path(tmp) / "models")
            settings = settings.model_copy(update={"home": Path(tmp)})
        encoder = load_model(settings, args.model, root)
        if args.engines:
            from bench.reindex_engines import DEFAULT_CORPUS, bench_engines, load_docs

            docs = load_docs(args.corpus or DEFAULT_CORPUS, args.docs)
            ref = "production" if args.import_base else args.model
            bench_engines(settings, client, ref, encoder, docs, args.batch).write(args.json)
            return
        bench_reindex(settings, client, encoder, args.docs, args.batch, result)
    if args.search_docs:
        bench_search(client, args.search_docs, args.searches, result)
    result.write(args.json)


if __name__ == "__main__":
    main()

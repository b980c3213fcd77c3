"""One iteration's uplift from simulated clicks, beside a supervised fine-tune (no servers).

    .venv/bin/python -m bench.uplift [--dataset ../shared/data/homedepot-dev]
        [--users-per-query 3] [--randomize 0.2] [--explore-depth 20] [--max-steps N]
        [--max-length 256] [--pooling] [--negatives CHOICE ...] [--no-references] [--json FILE]
        [--click-model position|cascade|dbn] [--eta 1.0] [--noise 0.05] [--trust-bias 0]
        [--dbn-continue 0.9]

What the tuner's first iteration can learn on a judged collection, measured in one process:

1. The base model ranks the whole corpus for every train query. Simulated users
   (`tuner.simulator`: by default position-based, examination (1/(k+1))^1, 5% noise clicks,
   carts and purchases on top-grade hits, as the demo's shoppers; `--click-model`, `--eta`,
   `--noise`, `--trust-bias` and `--dbn-continue` (`bench/users.py`) change them) act on its
   top 10; a `--randomize` share of the searches shows 10 of the top `--explore-depth`
   shuffled, as `serving.randomization` does (the demo's defaults: 0.2 and 20). The UBI
   records are joined into sessions exactly as the tuner reads them (`join_sessions`).
2. Three fine-tunes of the base model, each with the tuner's training settings:
   - clicks: the tuner's pairs (outcome weight x clipped inverse propensity, skip-above hard
     negatives), propensities fitted from the sessions as the tuner fits them;
   - no_ipw: the same sessions with propensity 1 at every rank (the ablation);
   - pooled (with `--pooling`): the same sessions pooled per (query, document) into one pair
     weighted by its position-corrected outcome rate (`tuner.pooling`, `train.pooling`);
   - supervised: the collection's own train judgments (the yardstick clicks can approach).
   - clicks_<choice> (with `--negatives`): the clicks fine-tune with `train.negatives` set to
     each choice (`tuner.config.NegativeSource`); ann_mined searches the base model's vectors of
     the corpus (the live index of the simulated round) exactly (`tuner.negatives`).
   `--no-references` leaves out no_ipw and supervised (an ablation of the click arms only).
3. Base and the three models scored on the test queries by exact search over the whole corpus
   (`tuner.references`, as the demo's references).

Unlike the demo, there is no validation split or gate: every train session is a training
session, so this is the most one round of clicks can teach. `--gate` adds what the demo's gate
sees of that round: the sessions split as the tuner splits a batch (`tuner.splits`), a fine-tune
on the train split only, and its paired `ips_dcg@10` improvement over the base model on the
held-out sessions with the gate's lower bound, beside that same candidate's test nDCG@10.
Ratios: the click uplift as a share of the supervised uplift (the demo's target over three rounds
is >= 0.9), clicks over no_ipw and, with `--pooling`, pooled over clicks.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import BenchResult
from bench.users import add_user_arguments, user_model
from tuner.simulator import ClickSimulator, UserModel, query_record

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "datasets" / "products-synth"
SHOWN = 10
METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
Embed = Callable[[Sequence[str]], np.ndarray]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    user = user_model(parser, args)
    from tuner.base_models import load_text_model
    from tuner.config import TunerSettings
    from tuner.judged import load_collection
    from tuner.references import (
        click_pairs,
        corpus_texts,
        no_ipw_settings,
        supervised_pairs,
        train_reference,
    )
    from tuner.session_eval import evaluate_collection_in_memory, torch_embedder

    collection = load_collection(args.dataset)
    settings = tuner_settings(TunerSettings(), args)
    started = time.perf_counter()
    base = load_text_model(settings.train.base_model)
    base.max_seq_length = settings.train.max_length
    embed = memoized(torch_embedder(base))
    found: dict[str, dict[str, Any]] = {}
    found["base"] = _scored(evaluate_collection_in_memory(embed, collection, "test"))
    _say("base", found["base"], started)

    sessions = simulate_sessions(embed, collection, corpus_texts(collection), args, user)
    clicks = click_pairs(sessions, settings)
    runs = {"clicks": clicks}
    if not args.no_references:
        runs["no_ipw"] = click_pairs(sessions, no_ipw_settings(settings))
        runs["supervised"] = supervised_pairs(collection)
    if args.pooling:
        runs["pooled"] = click_pairs(sessions, pooled_settings(settings))
    for choice in args.negatives or ():
        runs[f"clicks_{choice}"] = negative_pairs(sessions, settings, choice, embed, collection)
    print(f"{len(sessions)} sessions, {len(clicks)} click pairs", flush=True)
    for name, pairs in runs.items():
        reference = train_reference(collection, pairs, settings)
        found[name] = {
            **_scored(reference.metrics),
            "pairs": reference.pairs,
            "steps": reference.steps,
            "train_s": round(reference.seconds, 1),
            "effective_batch": reference.effective_batch,
        }
        _say(name, found[name], started)
    if args.gate:
        found["gated"] = gate_view(collection, sessions, settings, base)
        _say("gated", found["gated"], started)
        gated = found["gated"]
        print(
            f"gate on {gated['validation_sessions']} held-out sessions: ips_dcg@10 "
            f"{gated['gate_improvement']:+.4f} over live {gated['gate_live']:.4f}, lower bound "
            f"{gated['gate_lower_bound']:+.4f} (passes if > {settings.gate.min_improvement})"
        )
    result = bench_result(found, len(sessions), vars(args))
    for name, ratio in result.ratios.items():
        print(f"{name}: {ratio.value:.3f}")
    result.write(args.json)
    return 0


def gate_view(collection: Any, sessions: list[Any], settings: Any, base: Any) -> dict[str, Any]:
    """One round as the tuner's gate judges it: train on the train split of `sessions`, then the
    candidate's and the base model's per-session ips_dcg@10 on the held-out ones."""
    from tuner.base_models import load_text_model
    from tuner.gate import lower_bound
    from tuner.iteration import learning_data
    from tuner.references import corpus_texts
    from tuner.session_eval import evaluate_collection_in_memory, score_sessions, torch_embedder
    from tuner.splits import split_sessions
    from tuner.train import fine_tune

    splits = split_sessions(sessions, settings.batches)
    data = learning_data(splits.train, splits.validation, settings)
    texts = corpus_texts(collection)
    candidate = load_text_model(settings.train.base_model)
    candidate.max_seq_length = settings.train.max_length
    report = fine_tune(candidate, data.pairs, texts, settings.train)
    live = score_sessions(torch_embedder(base), data.judgments, texts)[1]
    gain = score_sessions(torch_embedder(candidate), data.judgments, texts)[1] - live
    test = evaluate_collection_in_memory(torch_embedder(candidate), collection, "test")
    return {
        **_scored(test),
        "pairs": report.pairs,
        "steps": report.steps,
        "train_s": round(report.seconds, 1),
        "validation_sessions": int(gain.size),
        "gate_live": round(float(live.mean()), 4),
        "gate_improvement": round(float(gain.mean()), 4),
        "gate_lower_bound": round(lower_bound(gain, settings.gate.confidence), 4),
    }


def tuner_settings(settings: Any, args: argparse.Namespace) -> Any:
    """`settings` with the bench's training caps applied."""
    train = settings.train.model_copy(
        update={"max_steps": args.max_steps, "max_length": args.max_length}
    )
    return settings.model_copy(update={"train": train})


def pooled_settings(settings: Any) -> Any:
    """`settings` with `train.pooling` on (its other fields as configured)."""
    pooling = settings.train.pooling.model_copy(update={"enabled": True})
    train = settings.train.model_copy(update={"pooling": pooling})
    return settings.model_copy(update={"train": train})


def negative_pairs(
    sessions: list[Any], settings: Any, choice: str, embed: Embed, collection: Any
) -> list[Any]:
    """The click pairs with `train.negatives` = `choice`; ann_mined mines the base model's
    exact index of the corpus (the index the simulated users searched)."""
    from tuner.config import NegativeSource
    from tuner.negatives import ExactNeighbours, mine_negatives
    from tuner.references import click_pairs, corpus_texts

    train = settings.train.model_copy(update={"negatives": NegativeSource(choice)})
    pairs = click_pairs(sessions, settings.model_copy(update={"train": train}))
    if choice != "ann_mined":
        return pairs
    texts = corpus_texts(collection)
    ids = sorted(texts)
    index = ExactNeighbours(ids, embed([texts[d] for d in ids]))
    return mine_negatives(pairs, embed, index, index.name, train.ann_depth)


def memoized(embed: Embed) -> Embed:
    """`embed` that encodes each distinct text once (the corpus is ranked, then scored)."""
    cache: dict[str, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            cache.update(zip(missing, embed(missing), strict=True))
        return np.stack([cache[t] for t in texts]) if texts else embed([])

    return cached


def simulate_sessions(
    embed: Embed,
    collection: Any,
    doc_texts: dict[str, str],
    args: argparse.Namespace,
    user: UserModel | None = None,
) -> list[Any]:
    """Sessions of `users_per_query` simulated `user`s (default: the demo's shoppers) on the base
    model's top 10 per train query."""
    from tuner.sessions import join_sessions

    doc_ids = sorted(doc_texts)
    doc_vectors = embed([doc_texts[d] for d in doc_ids])  # (docs, D)
    queries = collection.split_queries("train")
    query_ids = sorted(queries)
    scores = embed([queries[q] for q in query_ids]) @ doc_vectors.T  # (queries, docs)
    simulator = ClickSimulator(collection.qrels, user or UserModel(), seed=args.seed)
    rng = random.Random(args.seed)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    records: list[dict] = []
    events: list[dict] = []
    for row, qid in enumerate(query_ids):
        ranked = [doc_ids[j] for j in np.argsort(-scores[row])[: max(SHOWN, args.explore_depth)]]
        top = ranked[: args.explore_depth]
        for shopper in range(args.users_per_query):
            shuffled = rng.random() < args.randomize
            order = rng.sample(top, len(top)) + ranked[args.explore_depth :] if shuffled else ranked
            hits = order[:SHOWN]
            query_id = f"q{len(records)}"
            at += timedelta(seconds=1)
            client = f"user-{qid}-{shopper}"
            records.append(
                query_record(
                    query_id,
                    queries[qid],
                    hits,
                    client_id=client,
                    at=at,
                    attributes={"randomized": True} if shuffled else None,
                )
            )
            events += simulator.events(query_id, qid, hits, client_id=client, at=at)
    return join_sessions(records, events)


def bench_result(found: dict[str, dict[str, Any]], sessions: int, options: dict) -> BenchResult:
    """Every printed figure and the two ratios in the shape of `bench/results.py`."""
    params = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k != "json"}
    result = BenchResult("uplift", params={**params, "sessions": sessions})
    for name, figures in found.items():
        for metric in METRICS:
            result.add(f"{name}_{metric}", figures[metric], "")
        for key, unit in (
            ("pairs", "pairs"),
            ("steps", "steps"),
            ("train_s", "s"),
            ("effective_batch", "pairs"),
            ("validation_sessions", "sessions"),
            ("gate_live", ""),
            ("gate_improvement", ""),
            ("gate_lower_bound", ""),
        ):
            if figures.get(key) is not None:
                result.add(f"{name}_{key}", figures[key], unit)
    base = found["base"]["ndcg@10"]
    clicks = found["clicks"]["ndcg@10"]
    if "supervised" in found:
        supervised_gain = found["supervised"]["ndcg@10"] - base
        if supervised_gain > 0:  # a share of no gain means nothing: the ratio is left out
            result.add_ratio("clicks_share_of_supervised_uplift", (clicks - base) / supervised_gain)
    if "no_ipw" in found:
        result.add_ratio("clicks_over_no_ipw_ndcg", clicks / found["no_ipw"]["ndcg@10"])
    result.add_ratio("clicks_over_base_ndcg", clicks / base)
    for name in found:
        if name.startswith("clicks_"):
            result.add_ratio(f"{name}_over_clicks_ndcg", found[name]["ndcg@10"] / clicks)
    if "pooled" in found:
        result.add_ratio("pooled_over_clicks_ndcg", found["pooled"]["ndcg@10"] / clicks)
    return result


def _scored(metrics: dict[str, float]) -> dict[str, Any]:
    return {m: round(float(metrics[m]), 4) for m in METRICS}


def _say(name: str, figures: dict[str, Any], started: float) -> None:
    shown = ", ".join(f"{m} {figures[m]:.4f}" for m in METRICS)
    extra = f" ({figures['pairs']} pairs, {figures['steps']} steps)" if "pairs" in figures else ""
    if figures.get("effective_batch") is not None:
        extra += f" effective batch {figures['effective_batch']:.1f}"
    print(f"{name:>10}: {shown}{extra} [{time.perf_counter() - started:.0f} s]", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.uplift", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--users-per-query", type=int, default=3)
    parser.add_argument("--randomize", type=float, default=0.2)
    parser.add_argument(
        "--explore-depth", type=int, default=20, help="a shuffled search shows 10 of this top"
    )
    parser.add_argument(
        "--gate", action="store_true", help="also train on the train split and report the gate"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap per fine-tune")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text")
    parser.add_argument(
        "--pooling", action="store_true", help="also fine-tune on the pooled click pairs"
    )
    parser.add_argument(
        "--negatives",
        nargs="+",
        choices=["none", "skip_above", "skip_above_examined", "top_skipped", "ann_mined"],
        help="also fine-tune the clicks with each of these train.negatives",
    )
    parser.add_argument(
        "--no-references", action="store_true", help="leave out the no_ipw and supervised arms"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    add_user_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())

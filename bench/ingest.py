"""Ingest throughput: Kafka -> OpenSearch through the worker vs raw bulk of the same documents.

    .venv/bin/python bench/ingest.py [--records 100000] [--json FILE]

Against the configured servers (`CLICKTUNE_OPENSEARCH__URL`, `CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS`),
in fresh topics and indexes that it deletes afterwards:

1. produces N small UBI records (9 events : 1 query) to two topics;
2. raw: indexes the same documents (validated and given their ids before the clock starts)
   with `opensearchpy.helpers.bulk` (one request at a time) and with `helpers.parallel_bulk`
   (2 threads, as many as the worker's `bulk_concurrency`), each into its own fresh index with
   the same template, in chunks of `batch_size` documents; their time is the helpers' own work
   (JSON encoding of the actions, the HTTP requests, OpenSearch indexing) and nothing else;
3. worker: `IngestWorker.run(max_records=N)`, into fresh indexes; its time runs from the
   start of the first batch to the last offset commit: Kafka fetch and decoding, validation,
   encoding, dead-letter checks, bulk writes and offset commits (the consumer-group join before
   the first record is left out);
4. raw `helpers.bulk` once more, after the worker: the raw bulk rate is the mean of the two, so
   that load from other processes on a shared machine weighs on both sides alike.

Prints records/s of each and the ratio of the worker to each raw rate. The target (>= 0.8) is
against `helpers.bulk`, the plain single-threaded bulk indexing of the same documents; the
ratio to `parallel_bulk` is printed beside it. `--json FILE` writes the same figures in the shape
of `bench/results.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# This script is named like the `ingest` package: keep its own folder off the import path, and
# put the repository root on it for `bench.results` when it is run as `python bench/ingest.py`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from kafka import KafkaAdminClient, KafkaProducer  # noqa: E402
from opensearchpy import helpers  # noqa: E402

from bench.results import BenchResult  # noqa: E402
from clicktune.cli.ingest import build_worker  # noqa: E402
from clicktune.clients import kafka_options, opensearch_client  # noqa: E402
from clicktune.config import Settings, load_settings  # noqa: E402
from ingest.config import IngestSettings  # noqa: E402
from ingest.dlq import dlq_topic  # noqa: E402
from ingest.templates import install_templates, template_name  # noqa: E402
from ingest.validate import RecordKind, Rejection, validate_record  # noqa: E402

TARGET_RATIO = 0.8
# figure names in the JSON of each raw run
RAW_FIGURES = {
    "bulk": "raw_bulk_before",
    "parallel_bulk": "raw_parallel_bulk",
    "bulk, after": "raw_bulk_after",
}
BASE_MS = 1_748_779_200_000


def event(i: int) -> dict[str, Any]:
    return {
        "action_name": "click" if i % 4 else "add_to_cart",
        "query_id": f"q{i // 10}",
        "client_id": f"c{i % 97}",
        "timestamp": BASE_MS + i,
        "event_attributes": {
            "object": {"object_id": f"d{i % 5000}", "object_id_field": "_id"},
            "position": {"ordinal": i % 10},
            "event_id": f"e{i}",
            "session_id": f"s{i // 10}",
        },
    }


def query(i: int) -> dict[str, Any]:
    return {
        "query_id": f"q{i // 10}",
        "timestamp": BASE_MS + i,
        "client_id": f"c{i % 97}",
        "user_query": f"cordless drill {i % 300}",
        "query_response_hit_ids": [f"d{(i + k) % 5000}" for k in range(5)],
        "application": "bench",
        "query_attributes": {"session_id": f"s{i // 10}", "model_version": "base"},
    }


def records(n: int) -> list[tuple[RecordKind, bytes]]:
    out = []
    for i in range(n):
        kind = RecordKind.QUERY if i % 10 == 0 else RecordKind.EVENT
        body = query(i) if kind is RecordKind.QUERY else event(i)
        out.append((kind, json.dumps(body, separators=(",", ":")).encode()))
    return out


def bench_settings(base: Settings, tag: str) -> Settings:
    ingest = base.ingest.model_copy(
        update={
            "queries_topic": f"bench.{tag}.queries",
            "events_topic": f"bench.{tag}.events",
            "queries_index": f"bench_{tag}_queries",
            "events_index": f"bench_{tag}_events",
            "group_id": f"bench-{tag}",
            "topic_partitions": 2,
            "progress_interval_s": 5.0,
        }
    )
    return base.model_copy(update={"ingest": ingest})


def produce(settings: Settings, data: list[tuple[RecordKind, bytes]]) -> float:
    s = settings.ingest
    producer = KafkaProducer(
        **kafka_options(settings.kafka),
        acks="all",
        linger_ms=50,
        batch_size=512 * 1024,
    )
    started = time.perf_counter()
    for kind, value in data:
        producer.send(s.queries_topic if kind is RecordKind.QUERY else s.events_topic, value)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def raw_actions(
    data: list[tuple[RecordKind, bytes]], queries_index: str, events_index: str, max_bytes: int
) -> list[dict[str, Any]]:
    actions = []
    for kind, value in data:
        record = validate_record(value, kind, max_bytes)
        assert not isinstance(record, Rejection), record
        index = queries_index if kind is RecordKind.QUERY else events_index
        actions.append({"_index": index, "_id": record.record_id, "_source": record.source})
    return actions


def raw_rate(client: Any, actions: list[dict[str, Any]], parallel: bool, chunk: int) -> float:
    started = time.perf_counter()
    if parallel:
        for ok, info in helpers.parallel_bulk(client, actions, thread_count=2, chunk_size=chunk):
            assert ok, info
    else:
        helpers.bulk(client, actions, chunk_size=chunk, max_chunk_bytes=10 * 1024 * 1024)
    return len(actions) / (time.perf_counter() - started)


def measure_raw(
    client: Any,
    data: list[tuple[RecordKind, bytes]],
    name: str,
    indexes: tuple[str, str],
    s: IngestSettings,
) -> float:
    """records/s of the helper `name` indexing `data` into the fresh `indexes`."""
    queries_index, events_index = indexes
    install_templates(client, queries_index, events_index)
    actions = raw_actions(data, queries_index, events_index, s.max_record_bytes)
    rate = raw_rate(client, actions, name == "parallel_bulk", s.batch_size)
    assert count(client, queries_index, events_index) == len(data)
    print(f"raw {name:<13}: {rate:8.0f} records/s")
    return rate


def count(client: Any, *indexes: str) -> int:
    client.indices.refresh(index=",".join(indexes))
    return sum(client.count(index=index)["count"] for index in indexes)


def run(n: int) -> BenchResult:
    """Measure the worker and the raw helpers on `n` records; the figures as printed."""
    result = BenchResult("ingest", params={"records": n})
    base = load_settings()
    tag = uuid.uuid4().hex[:8]
    settings = bench_settings(base, tag)
    s = settings.ingest
    client = opensearch_client(settings.opensearch, timeout=120, pool_maxsize=4)
    raw_indexes = {
        "bulk": (f"bench_{tag}_raw1_queries", f"bench_{tag}_raw1_events"),
        "parallel_bulk": (f"bench_{tag}_raw2_queries", f"bench_{tag}_raw2_events"),
        "bulk, after": (f"bench_{tag}_raw3_queries", f"bench_{tag}_raw3_events"),
    }
    try:
        data = records(n)
        result.add("record_size_mean", sum(len(v) for _, v in data) / n, "bytes")
        print(f"{n} records, {result.figures['record_size_mean']:.0f} bytes each on average")
        with build_worker(settings) as worker:
            worker.setup()  # topics and templates before producing
            produce_s = produce(settings, data)
            print(f"produced in {produce_s:.1f} s ({n / produce_s:.0f} records/s)")
            result.add("produce", n / produce_s, "records/s")

            raw: dict[str, float] = {}
            for name in ("bulk", "parallel_bulk"):
                raw[name] = measure_raw(client, data, name, raw_indexes[name], s)
            stats = worker.run(max_records=n)
        stored = count(client, s.queries_index, s.events_index)
        assert stored == n, f"worker stored {stored} of {n}"
        # again after the worker, so that load from elsewhere weighs on both sides alike
        raw["bulk, after"] = measure_raw(client, data, "bulk, after", raw_indexes["bulk, after"], s)
        return report(result, raw, stats)
    finally:
        cleanup(settings, client, [i for pair in raw_indexes.values() for i in pair])


def report(result: BenchResult, raw: dict[str, float], stats: Any) -> BenchResult:
    """Print the worker's rate and its ratios to the raw rates; record them all in `result`."""
    for name, value in raw.items():
        result.add(RAW_FIGURES[name], value, "records/s")
    # the target is against the mean of the two helpers.bulk runs, before and after the worker
    raw = {"bulk": (raw["bulk"] + raw["bulk, after"]) / 2, "parallel_bulk": raw["parallel_bulk"]}
    rate = stats.active_records_per_s
    result.add("worker", rate, "records/s")
    result.add("worker_batches", stats.batches, "batches")
    result.add("worker_retries", stats.retries, "retries")
    result.add("raw_bulk_mean", raw["bulk"], "records/s")
    print(
        f"worker end to end : {rate:8.0f} records/s ({stats.batches} batches, "
        f"{stats.retries} retries; Kafka fetch, validation and commits included)"
    )
    print(f"raw bulk, mean of before and after the worker: {raw['bulk']:8.0f} records/s")
    for name, baseline in raw.items():
        print(f"ratio worker / raw {name:<13} = {rate / baseline:.2f}")
    result.add_ratio("worker_over_raw_bulk", rate / raw["bulk"], f">={TARGET_RATIO}")
    result.add_ratio("worker_over_raw_parallel_bulk", rate / raw["parallel_bulk"])
    verdict = "meets" if result.ratios["worker_over_raw_bulk"].met else "BELOW"
    print(f"{verdict} the target: worker >= {TARGET_RATIO} x raw bulk (helpers.bulk)")
    return result


def cleanup(settings: Settings, client: Any, raw_indexes: list[str]) -> None:
    s = settings.ingest
    for index in (s.queries_index, s.events_index, *raw_indexes):
        client.indices.delete(index=index, ignore=[404])
        client.indices.delete_index_template(name=template_name(index), ignore=[404])
    admin = KafkaAdminClient(**kafka_options(settings.kafka))
    topics = [s.queries_topic, s.events_topic]
    admin.delete_topics([*topics, *(dlq_topic(t, s.dlq_suffix) for t in topics)])
    try:
        admin.delete_groups([s.group_id])
    except Exception as exc:  # the group may not exist if the run failed early
        print(f"(group {s.group_id} not deleted: {exc})", file=sys.stderr)
    admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    run(args.records).write(args.json)


if __name__ == "__main__":
    main()

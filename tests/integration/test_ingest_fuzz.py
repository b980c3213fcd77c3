"""Fuzzed malformed records between valid ones, into one running worker process: every malformed
record lands on the dead-letter topic with a reason, the valid ones around it are all stored, and
the worker stays up."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer

from clicktune.cli.ingest import build_worker
from clicktune.clients import kafka_options
from clicktune.config import Settings
from ingest.dlq import dlq_topic
from tests.integration import ingest_support
from tests.integration.ingest_support import (
    event,
    kill,
    produce,
    start_worker,
    stored_count,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ingest_settings = ingest_support.ingest_settings  # the fixture
MAX_RECORD_BYTES = 4096
REQUIRED = [("action_name",), ("timestamp",)]  # UBI 1.3.0: everything else is optional


def _valid() -> dict[str, Any]:
    return event(0) | {"event_attributes": {"object": {"object_id": "d1"}, "event_id": "x"}}


def _without(path: tuple[str, ...]) -> bytes:
    record = _valid()
    holder = record
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    return json.dumps(record).encode()


def _with(path: tuple[str, ...], value: Any) -> bytes:
    record = _valid()
    holder = record
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return json.dumps(record).encode()


letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=20)
malformed = st.one_of(
    st.binary(max_size=200).map(lambda b: b"\xff" + b),  # not UTF-8
    st.text(max_size=100).map(lambda t: ("{" + t).encode()),  # not JSON (or an incomplete one)
    st.one_of(st.integers(), letters, st.lists(st.integers(), max_size=5)).map(
        lambda v: json.dumps(v).encode()  # JSON, but not an object
    ),
    st.sampled_from(REQUIRED).map(_without),  # a required field missing
    st.one_of(letters, st.floats(allow_nan=False), st.booleans()).map(
        lambda v: _with(("event_attributes", "position"), {"ordinal": v})  # not an integer
    ),
    st.one_of(letters, st.floats(allow_nan=False), st.booleans(), st.none()).map(
        lambda v: _with(("timestamp",), v)  # not a timestamp (letters never parse as ISO-8601)
    ),
    st.integers(min_value=-(10**12), max_value=946_684_799_999).map(
        lambda v: _with(("timestamp",), v)  # epoch ms before 2000
    ),
    st.one_of(st.integers(), st.lists(letters, max_size=2), st.none()).map(
        lambda v: _with(("action_name",), v)  # wrong type
    ),
    st.integers(min_value=MAX_RECORD_BYTES, max_value=3 * MAX_RECORD_BYTES).map(
        lambda n: _with(("padding",), "x" * n)  # oversize
    ),
)


def _dead_letters(settings: Settings, consumer: KafkaConsumer) -> list[Any]:
    return [r for records in consumer.poll(timeout_ms=500).values() for r in records]


def test_fuzzed_malformed_records_are_dead_lettered_and_valid_neighbours_stored(
    ingest_settings: Settings, opensearch: Any, tmp_path: Path
) -> None:
    s = ingest_settings.ingest.model_copy(update={"max_record_bytes": MAX_RECORD_BYTES})
    run_settings = ingest_settings.model_copy(update={"ingest": s})
    with build_worker(run_settings) as setup:
        setup.setup()
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env(run_settings), log)
    dlq = KafkaConsumer(
        dlq_topic(s.events_topic),
        **kafka_options(run_settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    sent_bad: Counter[bytes] = Counter()
    received: list[Any] = []
    valid_total = 0

    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(malformed, min_size=20, max_size=60))
    def feed(bad: list[bytes]) -> None:
        nonlocal valid_total
        values: list[bytes] = []
        for value in bad:  # each bad record between two valid ones
            values += [value, _valid_bytes()]
        values.insert(0, _valid_bytes())
        produce(run_settings, s.events_topic, values)
        sent_bad.update(bad)
        valid_total += len(bad) + 1

        def all_arrived() -> bool:
            received.extend(_dead_letters(run_settings, dlq))
            return len(received) >= sum(sent_bad.values())

        wait_until(all_arrived, 60, "the dead letters")
        wait_until(lambda: stored_count(opensearch, s.events_index) == valid_total, 60, "valid")

    try:
        feed()
        assert worker.poll() is None, "the worker died: " + log.read_text()[-3000:]
    finally:
        dlq.close()
        code = kill(worker, signal.SIGTERM)
    assert code == 0
    print(f"\n{sum(sent_bad.values())} malformed, {valid_total} valid records")
    assert Counter(letter.value for letter in received) == sent_bad
    for letter in received:
        headers = dict(letter.headers)
        assert headers["reason"].decode().strip(), letter.value
        assert headers["source_topic"].decode() == s.events_topic
        assert int(headers["source_offset"]) >= 0
    assert stored_count(opensearch, s.events_index) == valid_total


def _valid_bytes() -> bytes:
    record = _valid()
    record["event_attributes"]["event_id"] = uuid.uuid4().hex
    return json.dumps(record).encode()

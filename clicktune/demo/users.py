"""Simulated shoppers: search through `/v1/search`, act on the hits, send UBI events to Kafka.

The serving app publishes the UBI query record of every search itself; the events the click
simulator draws go to the events topic exactly as a front end's collector would send them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tuner.judged import JudgedCollection
from tuner.simulator import ClickSimulator


@dataclass(frozen=True)
class TrafficReport:
    """What one round of simulated traffic did."""

    searches: int
    events: int
    clicks: int


class EventSink:
    """Sends UBI event records to a Kafka topic and waits for the broker's acknowledgements."""

    def __init__(self, producer, topic: str) -> None:  # type: ignore[no-untyped-def]
        self._producer = producer
        self._topic = topic

    def send(self, record: dict) -> None:
        key = record["event_attributes"]["event_id"].encode()
        self._producer.send(self._topic, key=key, value=json.dumps(record).encode())

    def flush(self) -> None:
        self._producer.flush(timeout=60)


def simulate_round(
    search_url: str,
    collection: JudgedCollection,
    simulator: ClickSimulator,
    sink: EventSink,
    *,
    round_number: int,
    users_per_query: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> TrafficReport:
    """Every train query searched by `users_per_query` users, in a shuffled order."""
    queries = list(collection.split_queries("train").items()) * users_per_query
    random.Random(seed + round_number).shuffle(queries)
    searches = events = clicks = 0
    with httpx.Client(base_url=search_url, timeout=60) as http:
        for i, (qid, text) in enumerate(queries):
            client_id = f"shopper-{round_number}-{i}"
            response = http.post(
                "/v1/search", json={"query": text, "k": 10, "client_id": client_id}
            )
            response.raise_for_status()
            answer = response.json()
            hits = [hit["id"] for hit in answer["hits"]]
            for record in simulator.events(answer["query_id"], qid, hits, client_id=client_id):
                sink.send(record)
                events += 1
                clicks += record["action_name"] == "click"
            searches += 1
            if progress is not None:
                progress(i + 1, len(queries))
    sink.flush()
    return TrafficReport(searches=searches, events=events, clicks=clicks)

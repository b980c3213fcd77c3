"""The environment of one demo run: its own topics, indexes, alias and home, and how its tuner
worker triggers, decides and scores (see `namespace_env`, `candidate_scoring_env`)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from tuner.config import RolloutMode, TrainMethod
from tuner.judged import JudgedCollection

__all__ = [
    "MIN_ROUND_SESSIONS",
    "DemoMethod",
    "candidate_scoring_env",
    "namespace_env",
    "new_run_id",
]


class DemoMethod(StrEnum):
    """What a demo run's tuner trains (`tuner.train.method`)."""

    full = "full"  # the whole text model: every round's winner is indexed anew
    query_adapter = "query_adapter"  # an adapter on the query side: no reindex
    query_tower = "query_tower"  # a copy of the text tower trained for queries: no reindex

    def train_method(self) -> TrainMethod:
        """The tuner's method (`tuner.train.method`) of the same name."""
        return TrainMethod(self.value)


MIN_ROUND_SESSIONS = 20  # a round's sessions trigger the tuner worker (fewer: nothing to learn)


def new_run_id(collection: str) -> str:
    """A fresh run's namespace: the collection, the UTC second and a random suffix, so that two
    runs started in the same second (seeds side by side) never share an index, topic or alias.
    Lower case only: it prefixes OpenSearch index names."""
    slug = "".join(c if c.isalnum() else "-" for c in collection.lower())
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"demo-{slug}-{stamp}-{secrets.token_hex(3)}"


def namespace_env(
    run_id: str,
    home: Path,
    randomize: float = 0.0,
    explore_depth: int = 10,
    rollout: RolloutMode = RolloutMode.two_stage,
    online_budget: int | None = None,
    seed: int = 0,
    method: TrainMethod = TrainMethod.full,
) -> dict[str, str]:
    """Environment overrides that give one demo run its own topics, indexes, alias and home,
    and the share of searches whose top `explore_depth` hits the serving side shuffles. The
    tuner worker triggers on each round's sessions at once (no grace period, no minimum interval)
    and decides with `rollout`: two_stage tests a candidate the gate calls non-inferior as an
    interleaved arm on the shoppers' next searches, within `online_budget` searches. `seed`
    seeds training and the batches' held-out splits (the shoppers are seeded by the loop);
    `method` is what the tuner trains (query_adapter: query models over the base index)."""
    budget = (
        {"CLICKTUNE_TUNER__WORKER__AB_MAX_QUERIES": str(online_budget)} if online_budget else {}
    )
    return {
        **budget,
        "CLICKTUNE_TUNER__TRAIN__SEED": str(seed),
        "CLICKTUNE_TUNER__TRAIN__METHOD": method.value,
        "CLICKTUNE_TUNER__BATCHES__SEED": str(seed),
        "CLICKTUNE_TUNER__WORKER__TASKS_INDEX": f"{run_id}-tasks",
        "CLICKTUNE_TUNER__WORKER__ROLLOUT": rollout.value,
        "CLICKTUNE_TUNER__WORKER__MIN_NEW_SESSIONS": str(MIN_ROUND_SESSIONS),
        "CLICKTUNE_TUNER__WORKER__MIN_INTERVAL_S": "0",
        "CLICKTUNE_TUNER__BATCHES__GRACE_S": "0",
        "CLICKTUNE_SERVING__RANDOMIZATION__FRACTION": str(randomize),
        "CLICKTUNE_SERVING__RANDOMIZATION__DEPTH": str(explore_depth),
        "CLICKTUNE_HOME": str(home),
        "CLICKTUNE_INGEST__QUERIES_TOPIC": f"{run_id}.ubi.queries",
        "CLICKTUNE_INGEST__EVENTS_TOPIC": f"{run_id}.ubi.events",
        "CLICKTUNE_INGEST__QUERIES_INDEX": f"{run_id}_ubi_queries",
        "CLICKTUNE_INGEST__EVENTS_INDEX": f"{run_id}_ubi_events",
        "CLICKTUNE_INGEST__GROUP_ID": f"{run_id}-ingest",
        "CLICKTUNE_SERVING__INDEX__ALIAS": f"{run_id}_docs",
        "CLICKTUNE_SERVING__INDEX__PREFIX": f"{run_id}_docs",
    }


def candidate_scoring_env(collection: JudgedCollection) -> dict[str, str]:
    """Environment overrides under which the tuner worker also scores the live model and each
    candidate on all the test queries (exact search over the corpus) and records both in the
    task, without letting the figures decide (`gate.general_decides` false): what a rejected
    candidate would have scored, while the test judgments never steer the gate."""
    return {
        "CLICKTUNE_TUNER__GATE__GENERAL_DATASET": str(collection.root.resolve()),
        "CLICKTUNE_TUNER__GATE__GENERAL_SPLIT": "test",
        "CLICKTUNE_TUNER__GATE__GENERAL_MAX_QUERIES": str(
            max(1, len(collection.split_queries("test")))
        ),
        "CLICKTUNE_TUNER__GATE__GENERAL_DECIDES": "false",
    }

"""Per-arm request, error and latency counts of A/B experiments, shared across replicas.

Each serving replica counts, per experiment and arm, the searches it answered, those that failed
(an exception in the arm's own work: loading its model, encoding, the k-NN search; they become
5xx answers) and their latency in a fixed-bucket histogram. The counts go two ways:

- `/metrics` (serving/api/metrics.py): `clicktune_arm_requests_total`, `clicktune_arm_errors_total`
  and the histogram `clicktune_arm_search_seconds`, labelled `experiment` and `arm`;
- `HealthReporter`: every `serving.ab.health_report_s` the replica overwrites one document per
  (experiment, replica) in the index `serving.ab.health_index` (`clicktune-arm-health`) with its
  cumulative counts; the tuner worker sums the documents of the experiment (`read`) and the A/B
  policy's guards (`ab_stats.decide`) stop a candidate that errs or is slow.

Why documents per replica and not `took_ms` in the UBI query records: a search that fails
publishes no UBI record (no logged query, no answer), so errors, the very thing a guard is for,
would be invisible there; UBI records also reach OpenSearch only through Kafka and the ingest
worker, so a guard would go blind exactly when ingest lags or is down, and records sent by other
front ends carry no timing at all. Fixed-bucket histograms add up exactly across replicas (a
reservoir does not), and a cumulative document overwritten by id makes every write idempotent: a
lost write is made good by the next one, a restarted replica writes under a new replica id, so
nothing is counted twice. What is lost is at most one report interval of a replica that died.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException

from ingest.index_layout import create_internal_index
from serving.errors import ExperimentError
from serving.state.background import BackgroundLoop

__all__ = [
    "LATENCY_BOUNDS_MS",
    "ArmHealth",
    "ArmHealthStore",
    "HealthLedger",
    "HealthReporter",
    "InMemoryArmHealthStore",
    "OpenSearchArmHealthStore",
]

log = logging.getLogger(__name__)

# upper bounds of the latency buckets: 0.5 ms x 1.5^i up to ~28 s, so any quantile is known
# to within a factor 1.5 before interpolation; one more bucket (+Inf) holds the rest
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(0.5 * 1.5**i, 3) for i in range(28))
EXPERIMENTS_KEPT = 2  # the running experiment and the one before it (reported one last time)
MAX_REPLICAS = 1000


@dataclass
class ArmHealth:
    """Requests, errors and a latency histogram of one arm; add two with `merge`."""

    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def observe(self, latency_ms: float, failed: bool = False) -> None:
        self.requests += 1
        self.errors += int(failed)
        self.latency_sum_ms += latency_ms
        self.buckets[bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1

    def merge(self, other: ArmHealth) -> ArmHealth:
        """The counts of both (e.g. two replicas) as one new `ArmHealth`."""
        return ArmHealth(
            self.requests + other.requests,
            self.errors + other.errors,
            self.latency_sum_ms + other.latency_sum_ms,
            [a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float:
        """The `q` quantile of the latency, linear within its bucket (0.0 with no requests)."""
        total = sum(self.buckets)
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for i, count in enumerate(self.buckets):
            if count and seen + count >= rank:
                low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
                high = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else 2 * low
                return low + (high - low) * max(0.0, rank - seen) / count
            seen += count
        return LATENCY_BOUNDS_MS[-1]

    @property
    def p95_ms(self) -> float:
        return self.quantile_ms(0.95)

    @property
    def p99_ms(self) -> float:
        return self.quantile_ms(0.99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p95_ms": round(self.p95_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }

    def to_doc(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_sum_ms": self.latency_sum_ms,
            "buckets": list(self.buckets),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ArmHealth:
        buckets = [int(b) for b in doc.get("buckets", [])]
        if len(buckets) != len(LATENCY_BOUNDS_MS) + 1:
            raise ExperimentError(
                f"arm health document has {len(buckets)} latency buckets; this version uses "
                f"{len(LATENCY_BOUNDS_MS) + 1} (LATENCY_BOUNDS_MS changed between versions?)"
            )
        return cls(int(doc["requests"]), int(doc["errors"]), float(doc["latency_sum_ms"]), buckets)


class HealthLedger:
    """This replica's counts per experiment and arm (thread-safe; the newest experiments kept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._experiments: dict[str, dict[str, ArmHealth]] = {}

    def record(self, experiment: str, arm: str, latency_ms: float, failed: bool) -> None:
        with self._lock:
            if experiment not in self._experiments:
                self._experiments[experiment] = {}
                while len(self._experiments) > EXPERIMENTS_KEPT:
                    del self._experiments[next(iter(self._experiments))]
            arms = self._experiments[experiment]
            arms.setdefault(arm, ArmHealth()).observe(latency_ms, failed)

    def snapshot(self) -> dict[str, dict[str, ArmHealth]]:
        """Copies of the counts, experiment id -> arm -> health, oldest experiment first."""
        with self._lock:
            return {
                experiment: {arm: ArmHealth().merge(h) for arm, h in arms.items()}
                for experiment, arms in self._experiments.items()
            }

    def latest(self) -> tuple[str | None, dict[str, ArmHealth]]:
        """The newest experiment this replica served and its arms (None, {} before any)."""
        snapshot = self.snapshot()
        if not snapshot:
            return None, {}
        experiment = list(snapshot)[-1]
        return experiment, snapshot[experiment]


class ArmHealthStore(Protocol):
    """Where replicas leave their counts and the worker reads the sum."""

    def write(self, replica: str, experiment: str, arms: Mapping[str, ArmHealth]) -> None: ...
    def read(self, experiment: str) -> dict[str, ArmHealth]: ...


class InMemoryArmHealthStore:
    """The store as a dict, for unit tests."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, ArmHealth]] = {}

    def write(self, replica: str, experiment: str, arms: Mapping[str, ArmHealth]) -> None:
        self.docs[(experiment, replica)] = dict(arms)

    def read(self, experiment: str) -> dict[str, ArmHealth]:
        return _sum(arms for (exp, _), arms in self.docs.items() if exp == experiment)


class OpenSearchArmHealthStore:
    """One document per (experiment, replica) in `index`, overwritten with cumulative counts."""

    MAPPINGS = {
        "properties": {
            "experiment": {"type": "keyword"},
            "replica": {"type": "keyword"},
            "updated_at": {"type": "date"},
            "arms": {"type": "object", "enabled": False},
        }
    }

    def __init__(self, client: OpenSearch, index: str, replicas: int | str = "0-1") -> None:
        """`replicas`: a count or an auto-expand range (`opensearch.internal_replicas`)."""
        self.client, self.index = client, index
        self.replicas = replicas
        self._ready = False

    def write(self, replica: str, experiment: str, arms: Mapping[str, ArmHealth]) -> None:
        self._ensure_index()
        doc = {
            "experiment": experiment,
            "replica": replica,
            "updated_at": datetime.now(UTC).isoformat(),
            "arms": {name: health.to_doc() for name, health in arms.items()},
        }
        try:
            self.client.index(
                index=self.index, id=f"{experiment}:{replica}", body=doc, refresh="wait_for"
            )
        except OpenSearchException as exc:
            raise ExperimentError(
                f"cannot write arm health of experiment {experiment!r} to {self.index!r}: {exc}"
            ) from exc

    def read(self, experiment: str) -> dict[str, ArmHealth]:
        """The counts of every replica that served `experiment`, summed per arm."""
        body = {"size": MAX_REPLICAS, "query": {"term": {"experiment": experiment}}}
        try:
            hits = self.client.search(index=self.index, body=body)["hits"]["hits"]
        except NotFoundError:
            return {}  # no replica has reported yet
        except OpenSearchException as exc:
            raise ExperimentError(f"cannot read arm health from {self.index!r}: {exc}") from exc
        return _sum(
            {name: ArmHealth.from_doc(d) for name, d in hit["_source"]["arms"].items()}
            for hit in hits
        )

    def _ensure_index(self) -> None:
        if self._ready:
            return
        try:
            create_internal_index(self.client, self.index, self.replicas, self.MAPPINGS)
        except OpenSearchException as exc:
            raise ExperimentError(f"cannot create the index {self.index!r}: {exc}") from exc
        self._ready = True


def _sum(replicas: Any) -> dict[str, ArmHealth]:
    total: dict[str, ArmHealth] = {}
    for arms in replicas:
        for name, health in arms.items():
            total[name] = total.get(name, ArmHealth()).merge(health)
    return total


class HealthReporter(BackgroundLoop):
    """A thread that writes this replica's ledger to the store every `interval_s`, and once
    more when stopped; a failed write is logged and retried at the next interval."""

    name = "clicktune-arm-health"

    def __init__(
        self, ledger: HealthLedger, store: ArmHealthStore, replica: str, interval_s: float
    ) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ExperimentError(f"interval_s={interval_s} must be a positive number of seconds")
        super().__init__()
        self.ledger, self.store, self.replica, self.interval_s = ledger, store, replica, interval_s
        self._written: dict[str, int] = {}  # experiment -> requests in its last written doc

    def flush(self) -> int:
        """Write the experiments whose counts changed since the last write; how many."""
        written = 0
        for experiment, arms in self.ledger.snapshot().items():
            requests = sum(h.requests for h in arms.values())
            if self._written.get(experiment) == requests:
                continue
            self.store.write(self.replica, experiment, arms)
            self._written[experiment] = requests
            written += 1
        return written

    def step(self) -> None:
        if not self._stop.wait(self.interval_s):  # stopping: close() writes the last time
            self.flush()

    def close(self) -> None:
        self.flush()

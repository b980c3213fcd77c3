"""Prometheus metrics of one serving replica, on `GET /metrics`.

    clicktune_request_seconds{method,route}      request latency histogram, per route template
    clicktune_request_errors_total{route,status} answers with status >= 400
    clicktune_encode_batch_size{slot,side}       texts per encode call; side: query or document
                                                 (a query model's pair), both (any other model)
    clicktune_encode_tokens_total{slot,side,kind} tokens the model runs carried: kind real (the
                                                 texts') or padded (rows x longest, what ran);
                                                 1 - real / padded is the padding waste
    clicktune_model_info{slot,version,dimension} 1 for the version each slot serves now
    clicktune_arm_requests_total{experiment,arm}  A/B searches per arm (rollout/arm_health.py)
    clicktune_arm_errors_total{experiment,arm}    of those, the failed ones (5xx answers)
    clicktune_arm_search_seconds{experiment,arm}  their latency histogram

Each app gets its own `CollectorRegistry`, so several apps (tests) never clash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from serving.api.auth import Scope, requires
from serving.encoders.encoder import DelegatingEncoder, ServableEncoder
from serving.encoders.encoder_pair import InputType, wrap_sides
from serving.encoders.slot import ModelSlot
from serving.encoders.token_batches import TokenTally, attach_tally
from serving.rollout.arm_health import LATENCY_BOUNDS_MS, HealthLedger

__all__ = ["MeteredEncoder", "Metrics", "install_metrics"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
INF = float("inf")
UNMATCHED = "unmatched"  # 404s get one label, so random paths cannot explode the series


class Metrics:
    """The replica's metric families, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "clicktune_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.errors = Counter(
            "clicktune_request_errors",
            "HTTP answers with status >= 400 by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "clicktune_encode_batch_size",
            "texts per encode call",
            ["slot", "side"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._slots = _SlotVersions()
        self.registry.register(self._slots)
        self._tokens = _TokenCollector()
        self.registry.register(self._tokens)

    def watch(self, slot: ModelSlot) -> None:
        """Report `slot`'s version and meter its encode calls, per side of a query model's pair."""
        self._slots.slots.append(slot)

        def meter(encoder: ServableEncoder, side: InputType | None) -> ServableEncoder:
            side_label = side.value if side is not None else "both"
            histogram = self.batch_size.labels(slot=slot.name, side=side_label)
            # One tally per slot and side, kept across swaps: the counts never go back.
            tally = self._tokens.tallies.setdefault((slot.name, side_label), TokenTally())
            attach_tally(encoder, tally)
            return MeteredEncoder(encoder, histogram.observe)

        slot.instrument(lambda encoder: wrap_sides(encoder, meter))

    def watch_arms(self, ledger: HealthLedger) -> None:
        """Report the per-arm counts of the A/B experiments this replica served."""
        self.registry.register(_ArmCollector(ledger))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredEncoder(DelegatingEncoder):
    """An encoder that reports how many texts each `encode` call carries."""

    def __init__(self, inner: ServableEncoder, observe: Any) -> None:
        super().__init__(inner)
        self._observe = observe

    def encode(self, texts: list[str]) -> np.ndarray:
        self._observe(len(texts))
        return self.inner.encode(texts)


class _SlotVersions(Collector):
    def __init__(self) -> None:
        self.slots: list[ModelSlot] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "clicktune_model_info",
            "the model version each slot serves (value 1)",
            labels=["slot", "version", "dimension"],
        )
        for slot in self.slots:
            encoder = slot.current
            if encoder is not None:
                family.add_metric([slot.name, encoder.version, str(encoder.dimension)], 1.0)
        yield family


class _TokenCollector(Collector):
    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], TokenTally] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "clicktune_encode_tokens",
            "tokens of the model runs: real (the texts') and padded (rows x longest)",
            labels=["slot", "side", "kind"],
        )
        for (slot, side), tally in sorted(self.tallies.items()):
            family.add_metric([slot, side, "real"], tally.real)
            family.add_metric([slot, side, "padded"], tally.padded)
        yield family


class _ArmCollector(Collector):
    """The ledger's counts at scrape time: the ledger stays the one source of truth."""

    def __init__(self, ledger: HealthLedger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Any]:
        labels = ["experiment", "arm"]
        requests = CounterMetricFamily(
            "clicktune_arm_requests", "A/B searches per experiment arm", labels=labels
        )
        errors = CounterMetricFamily(
            "clicktune_arm_errors", "A/B searches that failed, per experiment arm", labels=labels
        )
        latency = HistogramMetricFamily(
            "clicktune_arm_search_seconds", "A/B search latency per experiment arm", labels=labels
        )
        for experiment, arms in self.ledger.snapshot().items():
            for arm, health in arms.items():
                requests.add_metric([experiment, arm], health.requests)
                errors.add_metric([experiment, arm], health.errors)
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BOUNDS_MS, INF), health.buckets, strict=True):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                latency.add_metric(
                    [experiment, arm], buckets, sum_value=health.latency_sum_ms / 1000
                )
        yield from (requests, errors, latency)


def _le(bound_ms: float) -> str:
    return "+Inf" if bound_ms == INF else repr(bound_ms / 1000)


def install_metrics(
    app: FastAPI,
    slot: ModelSlot,
    metrics: Metrics | None = None,
    arms: HealthLedger | None = None,
) -> Metrics:
    """Time every request, count errors, meter `slot` (and the A/B arms of `arms`), and serve
    `GET /metrics`."""
    metrics = metrics or Metrics()
    metrics.watch(slot)
    if arms is not None:
        metrics.watch_arms(arms)

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", UNMATCHED)
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
            if status >= 400:
                metrics.errors.labels(route, str(status)).inc()

    @app.get("/metrics", include_in_schema=False, dependencies=[requires(Scope.PUBLIC)])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics

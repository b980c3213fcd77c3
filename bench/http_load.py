"""The HTTP load of `bench/serving.py`: `/v1/embeddings` from threads, latency percentiles.

Standard library plus numpy, so it loads the same way against clicktune and its peer: every
thread keeps one socket alive, a failed request (status other than 200, or a broken connection)
counts as an error and gets a fresh socket, and each run is timed from the first request to the
last answer.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.results import BenchResult

__all__ = [
    "LoadResult",
    "bulk_load",
    "http_rounds",
    "run_load",
    "single_load",
    "swap_load",
]


@dataclass
class LoadResult:
    """One or more load runs pooled: texts sent, seconds taken, each request's latency."""

    texts: int
    seconds: float
    latencies_ms: np.ndarray  # (requests,)
    errors: int

    @property
    def rate(self) -> float:
        return self.texts / self.seconds

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    def __add__(self, other: LoadResult) -> LoadResult:
        """Two runs as one: the rate over both, the percentiles of all their requests."""
        return LoadResult(
            self.texts + other.texts,
            self.seconds + other.seconds,
            np.concatenate([self.latencies_ms, other.latencies_ms]),
            self.errors + other.errors,
        )

    def __str__(self) -> str:
        return (
            f"{self.rate:8.1f} texts/s  p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"errors {self.errors}/{len(self.latencies_ms)}"
        )

    def record(self, result: BenchResult, name: str) -> None:
        result.add(f"{name}_rate", self.rate, "texts/s")
        result.add(f"{name}_p50", self.p50_ms, "ms")
        result.add(f"{name}_p99", self.p99_ms, "ms")
        result.add(f"{name}_errors", self.errors, "requests")


def _post(conn: http.client.HTTPConnection, path: str, body: dict, headers: dict) -> int:
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **headers})
    response = conn.getresponse()
    response.read()
    return response.status


def run_load(url: str, model: str, batches: list[list[str]], concurrency: int) -> LoadResult:
    """POST `/v1/embeddings` for every batch from `concurrency` threads with kept-alive sockets."""
    host, port = url.removeprefix("http://").split(":")
    pending = list(enumerate(batches))
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                if not pending:
                    return
                _, texts = pending.pop()
            started = time.perf_counter()
            try:
                status = _post(conn, "/v1/embeddings", {"input": texts, "model": model}, {})
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                status = 0
            with lock:
                latencies.append(time.perf_counter() - started)
                errors += status != 200

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    texts = sum(len(b) for b in batches)
    return LoadResult(texts, seconds, np.array(latencies) * 1000, errors)


def bulk_load(url: str, model: str, texts: list[str], size: int, concurrency: int) -> LoadResult:
    run_load(url, model, [texts[:size]] * concurrency, concurrency)  # warm-up
    return run_load(
        url, model, [texts[i : i + size] for i in range(0, len(texts), size)], concurrency
    )


def single_load(url: str, model: str, texts: list[str], concurrency: int) -> LoadResult:
    run_load(url, model, [[t] for t in texts[:16]], concurrency)  # warm-up
    return run_load(url, model, [[t] for t in texts], concurrency)


def swap_load(
    url: str, model: str, texts: list[str], concurrency: int, versions: list[str], token: str
) -> tuple[LoadResult, list[int]]:
    """Single texts (twice over) while the admin API promotes between `versions` every 0.5 s;
    the load and the status of every promote."""
    stop = threading.Event()
    statuses: list[int] = []

    def promoter() -> None:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        auth = {"authorization": f"Bearer {token}"}
        while not stop.is_set():
            version = versions[len(statuses) % 2 - 1]
            statuses.append(_post(conn, "/admin/models/promote", {"version": version}, auth))
            stop.wait(0.5)

    thread = threading.Thread(target=promoter)
    thread.start()
    try:
        result = run_load(url, model, [[t] for t in texts] * 2, concurrency)
    finally:
        stop.set()
        thread.join()
    return result, statuses


def http_rounds(
    servers: dict[str, tuple[str, str]], texts: list[str], singles: int
) -> dict[str, dict[str, LoadResult]]:
    """Every load phase on every server (name -> (url, model)), in A B B A order and pooled,
    so that load from elsewhere that rises or falls during the run weighs on all alike."""
    phases: dict[str, Callable[[str, str], LoadResult]] = {
        "bulk32_c1": lambda url, model: bulk_load(url, model, texts, 32, 1),
        "bulk32_c4": lambda url, model: bulk_load(url, model, texts, 32, 4),
        "single_c8": lambda url, model: single_load(url, model, texts[:singles], 8),
    }
    order = [*servers, *reversed(servers)]
    out: dict[str, dict[str, LoadResult]] = {name: {} for name in servers}
    for phase, load in phases.items():
        for name in order:
            run = load(*servers[name])
            out[name][phase] = out[name][phase] + run if phase in out[name] else run
    return out

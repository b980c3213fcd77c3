"""Per-client token buckets: `burst` requests at once, then `rate_per_s` a second.

The collector keys them by the client's address (what uvicorn reports, X-Forwarded-For included
when the proxy is in `--forwarded-allow-ips`), not by the record's `client_id`: that is the
sender's own choice, and a forger could mint a fresh bucket per request. The number of buckets
kept is bounded (least recently seen first out), so many addresses cannot exhaust memory; a
client whose bucket was dropped starts again with a full one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """`take(key)` -> 0.0 when the request may go, else the seconds until it could."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s={rate_per_s} must be > 0 and burst={burst} >= 1")
        self.rate_per_s, self.burst, self.max_clients = rate_per_s, burst, max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

"""Dynamic micro-batching: concurrent requests' texts are encoded together.

`MicroBatcher` wraps one encoder. The first request to arrive opens a batch and waits at most
`window_ms` for others; the batch closes early once it holds `max_batch` texts. One worker thread
runs the wrapped encoder on the whole batch (which sorts texts by length and cuts model runs by
padded tokens, `serving.encoder.max_batch_tokens`, serving/encoders/token_batches.py: it alone knows
token lengths) and hands every request its own rows back. A request's texts always travel in one
batch, so a request is never split or interleaved; one larger than `max_batch` runs alone.

Each encoder the slot serves gets its own batcher (`clicktune serve` wraps every load), so
after a hot swap requests in flight finish on the encoder they started with. The worker thread
exits after `idle_exit_s` without work and restarts on the next request, so a swapped-out
batcher leaves no thread behind.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from serving.encoders.encoder import DelegatingEncoder, ServableEncoder

__all__ = ["MicroBatcher"]

IDLE_EXIT_S = 2.0


@dataclass
class _Request:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher(DelegatingEncoder):
    """An encoder that gathers concurrent `encode` calls into shared batches."""

    def __init__(
        self,
        inner: ServableEncoder,
        *,
        window_ms: float = 2.0,
        max_batch: int = 128,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> None:
        if window_ms < 0 or max_batch < 1:
            raise ValueError(
                f"window_ms={window_ms} must be >= 0 and max_batch={max_batch} must be >= 1"
            )
        super().__init__(inner)
        self._window_s = window_ms / 1000
        self._max_batch = max_batch
        self._idle_exit_s = idle_exit_s
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` (in order), sharing one model run with concurrent callers."""
        if not texts:
            return self.inner.encode(texts)
        request = _Request(list(texts))
        with self._cond:
            self._queue.append(request)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name=f"batcher-{self.version}", daemon=True
                )
                self._worker.start()
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self._run(batch)

    def _gather(self) -> list[_Request] | None:
        """The next batch: the oldest request plus those that arrive within the window."""
        with self._cond:
            if not self._queue and not self._cond.wait_for(
                lambda: bool(self._queue), timeout=self._idle_exit_s
            ):
                self._worker = None  # a later encode starts a fresh worker
                return None
            deadline = time.monotonic() + self._window_s
            while True:
                batch: list[_Request] = []
                size = 0
                for request in self._queue:
                    if batch and size + len(request.texts) > self._max_batch:
                        break
                    batch.append(request)
                    size += len(request.texts)
                left = deadline - time.monotonic()
                full = size >= self._max_batch or len(batch) < len(self._queue)
                if full or left <= 0:
                    break
                self._cond.wait(timeout=left)
            for _ in batch:
                self._queue.popleft()
            return batch

    def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = self.inner.encode(texts)
        except BaseException as exc:  # every waiting caller must hear of the failure
            for request in batch:
                request.error = exc
                request.done.set()
            return
        start = 0
        for request in batch:
            request.vectors = vectors[start : start + len(request.texts)]
            start += len(request.texts)
            request.done.set()

"""Micro-batching: concurrent requests share model runs, each gets exactly its own rows back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.encoders.batcher import MicroBatcher
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot


class Recording(HashingEncoder):
    """A hashing encoder that records the texts of every model run and can be slowed down."""

    def __init__(self, version: str = "v1", delay_s: float = 0.0, fail: bool = False) -> None:
        super().__init__(dimension=16, version=version)
        self.calls: list[list[str]] = []
        self.delay_s, self.fail = delay_s, fail

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return super().encode(texts)


def test_a_lone_request_gets_its_vectors_within_the_window() -> None:
    inner = Recording()
    batcher = MicroBatcher(inner, window_ms=20, max_batch=64)
    batcher.encode(["warm up the worker"])
    started = time.perf_counter()
    vectors = batcher.encode(["wing lift", "boundary layer"])
    elapsed = time.perf_counter() - started
    assert np.allclose(vectors, HashingEncoder(16).encode(["wing lift", "boundary layer"]))
    assert elapsed < 0.02 + 0.05  # the window, plus scheduling slack; never a second window


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    inner = Recording(delay_s=0.01)
    batcher = MicroBatcher(inner, window_ms=5, max_batch=64)
    requests = [[f"text {i} {j}" for j in range(1 + i % 3)] for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batcher.encode, requests))
    reference = HashingEncoder(16)
    for texts, vectors in zip(requests, results, strict=True):
        assert np.allclose(vectors, reference.encode(texts))
    assert len(inner.calls) < len(requests)  # coalesced
    for texts in requests:  # a request's texts stay together, in order, in one run
        assert sum(" ".join(texts) in " ".join(call) for call in inner.calls) == 1


def test_a_batch_never_exceeds_max_batch_and_big_requests_run_whole() -> None:
    inner = Recording(delay_s=0.01)
    batcher = MicroBatcher(inner, window_ms=5, max_batch=4)
    requests = [["a b"] * 3, ["c d"] * 10, ["e"], ["f"] * 2, ["g"]]
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(batcher.encode, requests))
    assert [len(r) for r in results] == [3, 10, 1, 2, 1]
    assert all(len(call) <= 4 or call == ["c d"] * 10 for call in inner.calls)


def test_a_failed_run_reaches_every_caller_and_the_batcher_recovers() -> None:
    inner = Recording(delay_s=0.01, fail=True)
    batcher = MicroBatcher(inner, window_ms=5, max_batch=64)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.encode, [f"t{i}"]) for i in range(4)]
        for future in futures:
            with pytest.raises(RuntimeError, match="model exploded"):
                future.result()
    inner.fail = False
    assert batcher.encode(["ok"]).shape == (1, 16)


def test_requests_in_flight_finish_on_the_encoder_they_started_with() -> None:
    old = Recording("v1", delay_s=0.2)
    slot = ModelSlot(MicroBatcher(old, window_ms=1, max_batch=64))
    taken = slot.current
    assert taken is not None
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(v=taken.encode(["wing"])))
    worker.start()
    time.sleep(0.05)
    slot.swap(MicroBatcher(Recording("v2"), window_ms=1, max_batch=64))
    worker.join()
    assert old.calls == [["wing"]] and np.asarray(result["v"]).shape == (1, 16)
    assert slot.version == "v2"


def test_the_worker_thread_leaves_when_idle_and_comes_back() -> None:
    batcher = MicroBatcher(Recording("idle"), window_ms=1, max_batch=8, idle_exit_s=0.05)
    batcher.encode(["x"])
    time.sleep(0.2)
    assert not any(t.name == "batcher-idle" for t in threading.enumerate())
    assert batcher.encode(["y"]).shape == (1, 16)

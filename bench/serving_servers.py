"""The servers bench/serving.py loads, started and stopped: `clicktune serve` and infinity-emb.

`serve_both` brings clicktune up on a free loopback port, and infinity-emb beside it when asked
(installed into its own venv on first use: bench/serving.py's docstring, step 3), inside an
`ExitStack` that stops them; `clicktune(...)` runs one command of this venv's CLI.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from clicktune.local_http import free_port, wait_until_ready

__all__ = ["INFINITY_SPEC", "clicktune", "serve_both"]

VENV_BIN = Path(sys.executable).parent
INFINITY_SPEC = "infinity-emb[server,torch]==0.0.78"  # the release this bench was run against


def clicktune(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "clicktune"), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"clicktune {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def serve_both(
    stack: contextlib.ExitStack, env: dict[str, str], model_path: Path, peer: bool
) -> dict[str, tuple[str, str]]:
    """clicktune (and infinity-emb when `peer`) up at once: name -> (url, model name)."""
    home = Path(env["CLICKTUNE_HOME"])
    port = free_port()
    server = start_clicktune(env, port, home / "serve.log")
    url = stack.enter_context(
        running(server, f"http://127.0.0.1:{port}", home / "serve.log", "/healthz")
    )
    servers = {"clicktune": (url, "production")}
    if peer:
        from clicktune.config import load_settings

        infinity = peer_url(stack, load_settings().home, model_path)
        if infinity is not None:
            servers["infinity"] = (infinity, "minilm")
    return servers


def start_clicktune(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "clicktune"), "serve", "--port", str(port), "--host", "127.0.0.1"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def install_infinity(home: Path) -> Path:
    """The infinity_emb command in its own venv (installed on first use)."""
    venv = home / "bench" / "infinity-venv"
    exe = venv / "bin" / "infinity_emb"
    marker = venv / ".clicktune-installed"  # holds the spec, written only after pip succeeded
    if marker.exists() and marker.read_text().strip() == INFINITY_SPEC:
        return exe
    print(f"installing {INFINITY_SPEC} into {venv} (minutes: it pulls torch)", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", INFINITY_SPEC]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not exe.exists():
        raise RuntimeError(f"pip install {INFINITY_SPEC} failed: {done.stderr[-1500:]}")
    marker.write_text(INFINITY_SPEC + "\n")
    return exe


def start_infinity(exe: Path, model: Path, port: int, log: Path) -> subprocess.Popen:
    """infinity-emb on the local model folder, offline; `/v1` prefix: the same path as ours."""
    cmd = [str(exe), "v2", "--model-id", str(model), "--engine", "torch", "--device", "cpu"]
    cmd += ["--port", str(port), "--host", "127.0.0.1", "--served-model-name", "minilm"]
    cmd += ["--url-prefix", "/v1"]  # its default serves /embeddings, which our load never asks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@contextlib.contextmanager
def running(server: subprocess.Popen, url: str, log: Path, health: str) -> Iterator[str]:
    """`url` once `server` answers `health`; the server is stopped on the way out."""
    try:
        wait_until_ready(
            f"{url}{health}", exit_code=server.poll, log_tail=log.read_text, timeout_s=300
        )
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def peer_url(stack: contextlib.ExitStack, home: Path, model_path: Path) -> str | None:
    """infinity-emb started on the model folder; None (and says why) when it cannot be."""
    log = home / "bench" / "infinity.log"
    try:
        port = free_port()
        server = start_infinity(install_infinity(home), model_path, port, log)
        return stack.enter_context(running(server, f"http://127.0.0.1:{port}", log, "/health"))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"infinity-emb NOT MEASURED, no ratios against it: {exc}")
        return None

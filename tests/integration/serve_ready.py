"""Starting a `clicktune serve` a test needs and waiting for it, with its log in the failure."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clicktune.config import Settings
from clicktune.local_http import free_port, wait_until_ready


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    """Return once `url/healthz` answers 200; fail with the serve log if it exits or is late."""
    wait_until_ready(
        f"{url}/healthz", exit_code=process.poll, log_tail=log.read_text, timeout_s=timeout_s
    )


def serve_env(home: Path, name: str, services: Settings, **extra: str) -> dict[str, str]:
    """The environment of a serve on the test services whose topics and index are `name`'s own.

    `extra` adds or overrides `CLICKTUNE_*` variables (e.g. the hot-swap poll, a token)."""
    return {
        **os.environ,
        "CLICKTUNE_HOME": str(home),
        "CLICKTUNE_OPENSEARCH__URL": services.opensearch.url,
        "CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
        "CLICKTUNE_KAFKA__CONTROL_TOPIC": f"{name}-control",
        "CLICKTUNE_INGEST__QUERIES_TOPIC": f"{name}-queries",
        "CLICKTUNE_INGEST__EVENTS_TOPIC": f"{name}-events",
        "CLICKTUNE_SERVING__INDEX__ALIAS": name,
        "CLICKTUNE_SERVING__INDEX__PREFIX": name,
        **extra,
    }


@contextmanager
def running_serve(home: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `clicktune serve` on a free port, logging to `home/serve.log`; yield its URL once
    healthy and stop it on the way out."""
    port = free_port()
    log = home / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "clicktune", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)

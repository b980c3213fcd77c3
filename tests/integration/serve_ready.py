"""Waiting for a `clicktune serve` a test started, with its log in the failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

from clicktune.local_http import wait_until_ready


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    """Return once `url/healthz` answers 200; fail with the serve log if it exits or is late."""
    wait_until_ready(
        f"{url}/healthz", exit_code=process.poll, log_tail=log.read_text, timeout_s=timeout_s
    )

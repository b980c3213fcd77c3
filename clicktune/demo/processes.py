"""Child processes of the demo: `clicktune serve` and `clicktune ingest run`, logged to files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from clicktune.local_http import free_port, wait_until_ready


def interrupt_on_sigterm() -> None:
    """Make `kill <pid>` end this process the way Ctrl-C does.

    Python's default SIGTERM ends the process at once, skipping the `finally` blocks that stop
    the demo's `serve`, `ingest run` and `tuner run` children, which then run on with gigabytes
    of memory. Raising KeyboardInterrupt instead unwinds through them (`subprocess.run` kills its
    child on the way out too)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


class ChildProcess:
    """One `clicktune ...` subprocess whose output goes to `log_path`."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clicktune", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ),
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL if it does not exit in `timeout_s`; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


class ServeProcess(ChildProcess):
    """`clicktune serve` on a free port, ready once `/readyz` answers 200."""

    def __init__(self, log_path: Path, model: str | None = None, timeout_s: float = 180) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port)] + (["--model", model] if model else [])
        super().__init__(args, log_path)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        try:
            wait_until_ready(
                f"{self.url}/readyz",
                exit_code=self.proc.poll,
                log_tail=self.log_tail,
                timeout_s=timeout_s,
            )
        except BaseException:  # not ready, or Ctrl-C / SIGTERM while waiting: no orphan serve
            self.stop()
            raise

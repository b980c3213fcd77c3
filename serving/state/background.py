"""`BackgroundLoop`: a daemon thread that calls `step()` until `stop()`.

The replica's followers (`serving.rollout.replicas`) and the A/B health reporter
(`serving.rollout.arm_health`) are such loops. A step that raises is logged and the loop
goes on after a second: a background duty must outlive one bad poll or an unreachable store.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["BackgroundLoop"]

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 1.0


class BackgroundLoop:
    """Subclasses give `step()` (one unit of work, which may wait on `self._stop`) and may give
    `close()`, called on the loop's own thread after the last step."""

    name = "clicktune-loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad step
                log.exception("%s: step failed", self.name)
                self._stop.wait(RETRY_AFTER_FAILURE_S)
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing is left to tell but the log
            log.exception("%s: close failed", self.name)

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the loop holds, or do its last work."""

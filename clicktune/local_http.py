"""Local HTTP servers this process starts (the demo's `clicktune serve`, tests, benches): a free
loopback port to put one on, and the wait until it answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

__all__ = ["NotReadyError", "free_port", "wait_until_ready"]


class NotReadyError(RuntimeError):
    """The server's process exited, or it did not answer 200 in time; the message has its log."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    url: str,
    *,
    exit_code: Callable[[], int | None],
    log_tail: Callable[[], str],
    timeout_s: float = 120,
    poll_s: float = 0.5,
) -> None:
    """Return once `GET url` answers 200.

    `exit_code` is the server process's `poll` (None while it runs): once it exits, or after
    `timeout_s`, `NotReadyError` names the url and ends with `log_tail()`.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = exit_code()
        if code is not None:
            raise NotReadyError(f"the server for {url} exited with status {code}:\n{log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise NotReadyError(f"{url} did not answer 200 within {timeout_s:.0f} s:\n{log_tail()}")

"""Process plumbing for the local services: ports, pid files, ownership checks, waits, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from clicktune.services.errors import PortTakenError

LOOPBACK = "127.0.0.1"


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something listens on `host:port` (binding it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port left in TIME_WAIT by a stopped server is free for our purpose.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(ports: dict[str, int], service: str) -> None:
    """Raise `PortTakenError` naming the first taken port and the setting that moves it."""
    for setting, port in ports.items():
        if port_in_use(port):
            env = f"CLICKTUNE_SERVICES__{setting.upper()}"
            raise PortTakenError(
                f"port {port} (services.{setting}) is already in use by another process, so "
                f"{service} cannot start there; stop that process or set {env} to a free port"
            )


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file`, or None when the file is missing or does not hold a number."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """The command line of `pid` as its arguments; empty when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def is_ours(argv: list[str], markers: Iterable[str], program: str = "java") -> bool:
    """True when `argv` runs `program` (java, or python for MLflow) with every marker in its
    arguments."""
    if not argv or not os.path.basename(argv[0]).startswith(program):
        return False
    joined = " ".join(argv)
    return all(marker in joined for marker in markers)


def owned_pid(pid_file: Path, markers: Iterable[str], program: str = "java") -> int | None:
    """The pid from `pid_file` if that process is alive and is the `program` process we started."""
    pid = read_pid(pid_file)
    if pid is None or not is_ours(cmdline(pid), markers, program):
        return None
    return pid


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Call `check` until it returns True or `timeout_s` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def terminate(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM `pid`, wait up to `timeout_s`, then SIGKILL. True when it had to be killed.

    A process that leads its own process group (the services start in a new session) is
    signalled with its group, so the workers it spawned (MLflow's uvicorn) stop with it."""
    _signal(pid, signal.SIGTERM)
    if wait_until(lambda: not _alive(pid), timeout_s, interval_s=0.2):
        return False
    _signal(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), 10.0, interval_s=0.1)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    # A zombie (our own exited child) still answers kill(0); /proc status tells it apart.
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of the text file at `path` (empty when it does not exist)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            start, data = end, b""
            while start > 0 and data.count(b"\n") <= lines:
                start = max(0, start - 64 * 1024)
                fh.seek(start)
                data = fh.read(end - start)
    except FileNotFoundError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]

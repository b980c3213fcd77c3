"""Faults for the tuner worker tests (test_tuner_worker_faults.py): an OpenSearch outage that
starts at a chosen request of the worker (`CuttingProxy`, with trips that follow the task's
stage writes through it), an online test's replica without a tuner, and process states."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from clicktune.local_http import free_port
from tests.integration.test_tuner_worker_ab import Loop
from tests.integration.worker_world import World


class Request(NamedTuple):
    """One HTTP request as the proxy saw it go to OpenSearch."""

    method: str
    path: str
    body: bytes
    connection: int = 0  # which client connection (numbered by the proxy) sent it

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def parse(data: bytes, connection: int = 0) -> Request | None:
    """The request `data` holds (head and body); None if it does not start with one."""
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    return Request(parts[0].decode(), parts[1].decode(), body, connection)


def read_request(source: socket.socket, data: bytes) -> bytes:
    """`data` completed to a whole request: urllib3 sends the head and the body apart."""
    while b"\r\n\r\n" not in data and (more := source.recv(65536)):
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [
        line.split(b":", 1)[1]
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    missing = int(lengths[0]) - len(body) if lengths else 0
    while missing > 0 and (more := source.recv(65536)):
        data, missing = data + more, missing - len(more)
    return data


Trip = Callable[[Request], bool]


class CuttingProxy:
    """A loopback TCP proxy in front of OpenSearch. Once `arm`ed, the first request that `trip`
    selects is dropped unsent, every open connection is closed and new ones are refused for
    `outage_s`: an outage that starts exactly there, as the client sees it."""

    def __init__(self, target: tuple[str, int], outage_s: float) -> None:
        self.target, self.outage_s = target, outage_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._up = threading.Event()
        self._up.set()
        self._trip: Trip | None = None
        self._open: set[socket.socket] = set()
        self._connections = 0
        self._lock = threading.Lock()
        # client connection -> response chunks sent back; its own lock, as trips read it under
        # `_lock`
        self._answers: dict[int, int] = {}
        self._answers_lock = threading.Lock()
        self.cut_by: Request | None = None  # the request the outage started at
        self.cut = threading.Event()  # set when the outage starts
        self.restored = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, trip: Trip) -> None:
        self._trip = trip

    def close(self) -> None:
        self._up.clear()
        _close(self._listener)
        self._drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)  # refused: the client sees the connection reset
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
                self._connections += 1
                number = self._connections
            pumps = ((client, upstream, number, True), (upstream, client, number, False))
            for args in pumps:
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def answers(self, connection: int) -> int:
        """How many response chunks went back on client connection `connection` so far."""
        with self._answers_lock:
            return self._answers.get(connection, 0)

    def _pump(
        self, source: socket.socket, sink: socket.socket, connection: int, to_server: bool
    ) -> None:
        """Relay `source` to `sink` for client connection number `connection`."""
        try:
            while chunk := source.recv(65536):
                if to_server:
                    chunk = read_request(source, chunk)  # requests follow one another whole
                    if self._tripped_by(chunk, connection):
                        return
                sink.sendall(chunk)
                if not to_server:
                    with self._answers_lock:
                        self._answers[connection] = self._answers.get(connection, 0) + 1
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            _close(source)
            _close(sink)

    def _tripped_by(self, chunk: bytes, connection: int) -> bool:
        with self._lock:
            request = parse(chunk, connection)
            trip = self._trip
            if trip is None or request is None or not trip(request):
                return False
            self._trip, self.cut_by = None, request
            self._up.clear()
        self._drop_all()
        self.cut.set()
        restore = threading.Timer(self.outage_s, self._restore)
        restore.daemon = True
        restore.start()
        return True

    def _restore(self) -> None:
        self._up.set()
        self.restored.set()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- trips: where in a task's life the outage starts -------------------------------------------
class TaskRequests:
    """Tells the worker's requests about the task index `tasks_index` apart; `answers` says how
    many response chunks went back on a client connection (`CuttingProxy.answers`)."""

    def __init__(self, tasks_index: str, answers: Callable[[int], int]) -> None:
        self.tasks_index = tasks_index
        self.answers = answers

    def stores(self, request: Request, stage: str) -> bool:
        """Whether `request` writes a task moved to `stage`."""
        if request.method not in ("PUT", "POST"):
            return False
        if not request.path.startswith(f"/{self.tasks_index}/_doc/"):
            return False
        body = request.json()
        return isinstance(body, dict) and body.get("stage") == stage

    def is_lease(self, request: Request) -> bool:
        """The lease document (read by every fence check, renewed by the heartbeat thread)."""
        return request.path.startswith(f"/{self.tasks_index}-lease/")

    def after(self, stage: str, then: Trip, count: int = 1) -> Trip:
        """Trip at the `count`-th request `then` selects once the task was stored in `stage`
        (the worker's main thread is sequential: a request of it after that write means the
        write was answered)."""
        seen = {"stored": False, "selected": 0}

        def trip(request: Request) -> bool:
            if not seen["stored"]:
                seen["stored"] = self.stores(request, stage)
                return False
            if self.is_lease(request) or not then(request):
                return False
            seen["selected"] += 1
            return seen["selected"] == count

        return trip

    def answered(self, stage: str) -> Trip:
        """Trip at the first request sent once the write storing `stage` was answered: the
        worker's main thread is sequential, so it is the first request of the stage (the fence's
        read of the lease), or a heartbeat's just before it. Any connection: the client may put
        the write's connection back into a full pool and drop it, so the next request of the main
        thread can come on another one."""
        write: list[tuple[int, int]] = []  # (its connection, answers on it before the write)

        def trip(request: Request) -> bool:
            if write:
                connection, before = write[0]
                return self.answers(connection) > before
            if self.stores(request, stage):
                write.append((request.connection, self.answers(request.connection)))
            return False

        return trip


def any_request(_: Request) -> bool:
    return True


def bulk(request: Request) -> bool:
    return request.path.split("?")[0].endswith("/_bulk")


def after_alias_move(requests: TaskRequests) -> Trip:
    """The first request after the document alias moved (`POST /_aliases`) in promoting: the
    registry's production alias moved too (files), the candidate alias not yet removed."""
    moved = [False]

    def then(request: Request) -> bool:
        if moved[0]:
            return True
        moved[0] = request.method == "POST" and request.path.split("?")[0] == "/_aliases"
        return False

    return requests.after("promoting", then)


# -- processes and the online test's other services --------------------------------------------
def wait_stopped(process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until `process` is stopped (SIGSTOP: state T in /proc/<pid>/stat)."""
    deadline = time.monotonic() + timeout_s
    stat = Path(f"/proc/{process.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert process.poll() is None, f"process {process.pid} exited ({process.returncode})"
        assert time.monotonic() < deadline, f"process {process.pid} did not stop in {timeout_s} s"
        time.sleep(0.1)


def ab_env(world: World, **extra: str) -> dict[str, str]:
    """The A/B rollout's settings, as test_tuner_worker_ab.py's `Loop` sets them."""
    return {
        "CLICKTUNE_TUNER__WORKER__ROLLOUT": "ab",
        "CLICKTUNE_TUNER__WORKER__AB_TRAFFIC": "0.5",
        "CLICKTUNE_SERVING__AB__MIN_QUERIES": "20",
        "CLICKTUNE_SERVING__AB__HEALTH_INDEX": f"tw_{world.unique}_arm_health",
        "CLICKTUNE_SERVING__AB__HEALTH_REPORT_S": "1",
        "CLICKTUNE_SERVING__ENCODER__MAX_LENGTH": "64",
        "CLICKTUNE_SERVING__HOT_SWAP__POLL_S": "1",
        **extra,
    }


class Replica(Loop):
    """`clicktune ingest run` and one `clicktune serve` on `world`, no tuner: the test runs its
    own workers (a killed one, then `--once` ones) against the experiment they serve."""

    def __init__(self, world: World, env: dict[str, str]) -> None:
        self.world, self.env = world, {**world.env, **env}
        self.logs = world.home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.children = {
            "ingest": self._spawn("ingest", ["ingest", "run"]),
            "serve": self._spawn("serve", ["serve", "--port", port]),
        }

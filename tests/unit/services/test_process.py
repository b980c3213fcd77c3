from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktune.services.errors import PortTakenError
from clicktune.services.process import (
    check_ports_free,
    cmdline,
    is_ours,
    owned_pid,
    port_in_use,
    tail,
    terminate,
    wait_until,
)


@pytest.fixture()
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_listening_port_is_taken_and_a_closed_one_is_free(listening_port: int) -> None:
    assert port_in_use(listening_port)
    assert not port_in_use(_free_port())


def test_taken_port_error_names_port_setting_and_env_var(listening_port: int) -> None:
    with pytest.raises(PortTakenError) as err:
        check_ports_free({"kafka_port": listening_port}, "kafka")
    message = str(err.value)
    assert f"port {listening_port}" in message
    assert "services.kafka_port" in message
    assert "CLICKTUNE_SERVICES__KAFKA_PORT" in message


def test_only_a_java_process_with_every_marker_is_ours() -> None:
    argv = ["/usr/bin/java", "-cp", "/h/kafka/libs/*", "kafka.Kafka", "/h/kafka/server.properties"]
    assert is_ours(argv, ["kafka.Kafka", "/h/kafka/server.properties"])
    assert not is_ours(argv, ["kafka.Kafka", "/other/server.properties"])
    assert not is_ours(
        ["/usr/bin/python3", "kafka.Kafka", "/h/kafka/server.properties"], ["kafka.Kafka"]
    )
    assert not is_ours([], ["kafka.Kafka"])


def _fake_java(marker: str) -> subprocess.Popen[bytes]:
    # argv[0] "java" with a marker argument: looks like our server to /proc/PID/cmdline.
    script = "import time; time.sleep(60)"
    return subprocess.Popen(["java", "-c", script, marker], executable=sys.executable)


def test_pid_file_counts_only_while_it_names_our_live_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka.pid"
    proc = _fake_java("server-marker")
    try:
        pid_file.write_text(f"{proc.pid}\n")
        # Right after fork /proc shows the parent's command line until exec has run.
        assert wait_until(lambda: owned_pid(pid_file, ["server-marker"]) == proc.pid, 10)
        assert owned_pid(pid_file, ["someone-elses-marker"]) is None
        assert terminate(proc.pid, timeout_s=5) is False  # SIGTERM was enough
        proc.wait(timeout=5)
        assert owned_pid(pid_file, ["server-marker"]) is None
    finally:
        proc.kill()
        proc.wait()


def test_terminate_stops_a_session_leader_with_the_workers_it_spawned() -> None:
    # A parent that ignores nothing and a child that would outlive it (as MLflow's uvicorn
    # worker outlives a killed `mlflow server`) unless the whole group is signalled.
    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); print(flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"
        children = [
            int(p.parent.name)
            for p in Path("/proc").glob("[0-9]*/stat")
            if _parent_of(p) == proc.pid
        ]
        assert len(children) == 1
        assert terminate(proc.pid, timeout_s=5) is False
        proc.wait(timeout=5)
        assert wait_until(lambda: cmdline(children[0]) == [], 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _parent_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_missing_or_garbled_pid_file_means_not_running(tmp_path: Path) -> None:
    assert owned_pid(tmp_path / "absent.pid", ["x"]) is None
    garbled = tmp_path / "garbled.pid"
    garbled.write_text("not a pid")
    assert owned_pid(garbled, ["x"]) is None


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail(tmp_path / "none.log", 3) == []

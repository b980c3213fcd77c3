"""`kill <demo>` must not leave the demo's children running (they hold gigabytes each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clicktune.demo import processes

pytestmark = pytest.mark.unit

DEMO_LIKE = """
import subprocess, sys, time
from clicktune.demo.processes import interrupt_on_sigterm
interrupt_on_sigterm()
# the child must not hold our pipes, or communicate() waits for it as well as for us
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    # announced inside the try: a SIGTERM handled before it would skip the cleanup
    print(child.pid, flush=True)
    time.sleep(120)
finally:
    child.terminate()
    child.wait()
    print("children stopped", flush=True)
"""


def test_sigterm_runs_the_cleanup_that_stops_the_children() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DEMO_LIKE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "children stopped" in out, err
    assert "KeyboardInterrupt" in err and "stopped by signal" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # reaped: it no longer exists


def test_a_serve_interrupted_while_starting_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(real_popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return started[-1]

    def interrupted(url: str, **kwargs: object) -> None:
        raise KeyboardInterrupt("stopped by signal 15")

    monkeypatch.setattr(processes.subprocess, "Popen", popen)
    monkeypatch.setattr(processes, "wait_until_ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        processes.ServeProcess(tmp_path / "serve.log")
    assert len(started) == 1
    assert started[0].returncode == -signal.SIGTERM  # stopped and reaped, not left running


def test_a_child_killed_by_a_signal_is_named_so_and_sigkill_points_at_memory() -> None:
    from clicktune.demo.loop import _exit_reason

    assert _exit_reason(2) == "failed with exit code 2"
    killed = _exit_reason(-signal.SIGKILL)
    assert killed.startswith("was killed by signal 9 SIGKILL") and "out-of-memory" in killed
    assert _exit_reason(-signal.SIGTERM) == "was killed by signal 15 SIGTERM"

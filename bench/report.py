"""The tables of `bench/run_all`: each bench's outcome, the Markdown, the machine it ran on.

An `Outcome` is what one bench run left: its `BenchResult` (`bench/results.py`) or why there is
none (exit status, timeout, a JSON that breaks the shape) with the last lines of its stderr.
`markdown` turns the outcomes into results.md: bench | figure | value | unit, then the ratios
with their targets and met or missed, then the runs with their sizes. Nothing here starts a
process, so the unit tests build the tables from fake outcomes; `machine_info` only reads files
and asks `nvidia-smi`, and reads the git commit from `.git` without running git.
"""

from __future__ import annotations

import html
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import BenchFormatError, BenchResult

__all__ = ["Outcome", "format_value", "machine_info", "markdown", "outcome"]

TAIL_LINES = 8
TAIL_WIDTH = 240


@dataclass
class Outcome:
    """One bench run: its result, or the failure and the tail of its stderr."""

    bench: str
    seconds: float
    result: BenchResult | None = None
    failure: str | None = None
    tail: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "status": "ok" if self.ok else "failed",
            "seconds": round(self.seconds, 1),
            "command": self.command,
            "result": self.result.to_json() if self.result else None,
            "failure": self.failure,
            "stderr_tail": self.tail,
        }


def outcome(
    bench: str, returncode: int | None, seconds: float, json_path: Path, log: str
) -> Outcome:
    """Judge a finished run: exit 0 and a JSON of the right shape, or FAILED with the reason.

    `returncode` None means the run was stopped at its time limit; `log` is its stderr (or its
    stdout when stderr was empty), whose last lines go with a failure.
    """
    tail = tail_lines(log)
    if returncode is None:
        return Outcome(bench, seconds, failure=f"timed out after {seconds:.0f} s", tail=tail)
    if returncode != 0:
        return Outcome(bench, seconds, failure=f"exit status {returncode}", tail=tail)
    if not json_path.exists():
        return Outcome(bench, seconds, failure=f"exit 0 but no {json_path} written", tail=tail)
    try:
        return Outcome(bench, seconds, result=BenchResult.read(json_path))
    except BenchFormatError as exc:
        return Outcome(bench, seconds, failure=f"bad JSON: {exc}", tail=tail)


def tail_lines(log: str, count: int = TAIL_LINES) -> list[str]:
    """The last `count` non-blank lines (progress bars' carriage returns split lines too)."""
    lines = [line.strip() for line in log.replace("\r", "\n").splitlines() if line.strip()]
    return [line[:TAIL_WIDTH] for line in lines[-count:]]


def format_value(value: float) -> str:
    """Digits a reader can compare: 12,345 records/s, 123.4 ms, 0.9987 cosine."""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.4g}"


def markdown(outcomes: list[Outcome], machine: dict[str, Any], quick: bool) -> str:
    """results.md: the figures table, the ratios table and the runs, under a machine line."""
    lines = ["# clicktune benchmarks", "", _machine_line(machine, quick), ""]
    lines += ["| bench | figure | value | unit |", "|---|---|---:|---|"]
    for one in outcomes:
        lines += _figure_rows(one)
    lines += ["", "## Ratios (to a baseline measured in the same run)", ""]
    lines += ["| bench | ratio | value | target | verdict |", "|---|---|---:|---|---|"]
    for one in outcomes:
        lines += _ratio_rows(one)
    lines += ["", "## Runs", "", "| bench | status | wall time | params |", "|---|---|---:|---|"]
    for one in outcomes:
        status = "ok" if one.ok else "FAILED"
        params = ", ".join(f"{k}={v}" for k, v in one.result.params.items()) if one.result else ""
        lines.append(_row(one.bench, status, f"{one.seconds:.0f} s", params))
    return "\n".join(lines) + "\n"


def _figure_rows(one: Outcome) -> list[str]:
    if one.result is None:
        # a stack trace's <module> would read as an HTML tag
        why = "<br>".join(
            _cell(html.escape(line, quote=False)) for line in [one.failure or "", *one.tail]
        )
        return [f"| {_cell(one.bench)} | FAILED | {why} | |"]
    r = one.result
    return [_row(one.bench, name, format_value(v), r.units[name]) for name, v in r.figures.items()]


def _ratio_rows(one: Outcome) -> list[str]:
    if one.result is None:
        return [_row(one.bench, "FAILED", "", "", "not measured")]
    rows = []
    for name, ratio in one.result.ratios.items():
        verdict = {True: "met", False: "missed", None: "no target"}[ratio.met]
        # 4 digits: 0.7998 must not read 0.80 beside a missed ">=0.8"
        rows.append(_row(one.bench, name, f"{ratio.value:.4g}", ratio.target or "", verdict))
    return rows


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(text: str) -> str:
    """Text safe in a table cell: no pipe or newline to break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _machine_line(machine: dict[str, Any], quick: bool) -> str:
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    return (
        f"{machine.get('date')}, commit {machine.get('git_commit') or 'unknown'}; "
        f"{machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB; GPU: {gpus}; "
        + ("quick sizes (a smoke run, not figures to quote)" if quick else "full sizes")
    )


def machine_info(root: Path) -> dict[str, Any]:
    """CPU model, cores, memory, GPUs, date and git commit: what a figure depends on."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(root),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit(root: Path) -> str | None:
    """HEAD's commit, read from the .git files (loose or packed ref); None outside a checkout."""
    git = root / ".git"
    if git.is_file():  # a worktree: "gitdir: <path>"
        git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    commondir = git / "commondir"  # a worktree keeps its branches in the main .git
    common = git / commondir.read_text().strip() if commondir.is_file() else git
    for base in (git, common):
        if (base / ref).is_file():
            return (base / ref).read_text().strip()
    packed = common / "packed-refs"
    for line in packed.read_text().splitlines() if packed.is_file() else []:
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    """GPU names and memory from nvidia-smi; empty without one (or without the tool)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"]
    try:
        listed = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]

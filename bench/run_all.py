#!/usr/bin/env python3
"""Run every benchmark and write one table of their figures and ratios.

    bench/run_all [--quick] [--only ingest,train] [--skip-infinity] [--out reports/bench]

Each bench of BENCHES runs in its own process with the venv's python
(`python -m bench.<name> ... --json reports/bench/<name>.json`), one after the other so that
none measures another's load. Its output is echoed with the elapsed time and kept under
reports/bench/logs/. A bench that fails (exit status, time limit, a JSON that breaks
`bench/results.py`) is marked FAILED with the last lines of its stderr, and the others still run.
At the end (see `bench/report.py`):

- reports/bench/results.json: every bench's JSON or failure, and the machine (CPU model, cores,
  memory, GPU, date, git commit);
- reports/bench/results.md: bench | figure | value | unit, then the ratios with their targets,
  met or missed; printed too.

`--quick` passes each bench the smaller sizes of its `quick` arguments: a run of minutes that
shows everything works, not figures to quote. Exit status 1 when a bench failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as bench/run_all.py: its folder shadows `serving`, `ingest`
    sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.report import Outcome, machine_info, markdown, outcome  # noqa: E402


@dataclass(frozen=True)
class Bench:
    """One bench script, `bench/<name>.py`, with its arguments for a full and a quick run."""

    name: str
    what: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()


BENCHES = (
    Bench("ingest", "Kafka -> OpenSearch worker vs helpers.bulk", quick=("--records", "10000")),
    Bench(
        "serving",
        "clicktune serve vs sentence-transformers, onnxruntime, infinity-emb; hot swap",
        quick=("--quick",),
    ),
    Bench(
        "reindex",
        "reindex vs encode-only, /v1/search latency",
        args=("--import-base",),
        quick=("--docs", "500", "--search-docs", "10000", "--searches", "200"),
    ),
    Bench(
        "train",
        "fine_tune vs a plain sentence-transformers loop",
        quick=("--pairs", "64", "--steps", "5"),
    ),
    Bench(
        "uplift",
        "one round of simulated clicks vs supervised, no_ipw (nDCG@10, exact search)",
        quick=("--max-steps", "5", "--max-length", "64"),
    ),
    Bench(
        "loop",
        "trigger-to-live time of the automated loop",
        # the repository's 504-document collection: cranfield's 1,400 are indexed twice
        quick=("--dataset", "datasets/products-synth", "--sessions", "100", "--max-steps", "5"),
    ),
)
NAMES = [b.name for b in BENCHES]


def select(only: str | None) -> list[Bench]:
    """The benches named in `--only` (comma-separated), in BENCHES order; all without it."""
    if not only:
        return list(BENCHES)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown or not wanted:
        raise SystemExit(f"--only {only!r}: unknown bench {unknown}; choose among {NAMES}")
    return [b for b in BENCHES if b.name in wanted]


def bench_argv(bench: Bench, quick: bool, skip_infinity: bool) -> list[str]:
    argv = [*bench.args, *(bench.quick if quick else ())]
    if skip_infinity and bench.name == "serving":
        argv.append("--skip-infinity")
    return argv


class Progress:
    """Echoes a bench's output with the elapsed time, and says it still runs when it is quiet."""

    def __init__(self, name: str, log: IO[str], quiet_s: float, stderr: Path) -> None:
        self.name, self.log, self.quiet_s, self.stderr = name, log, quiet_s, stderr
        self.started = self.last = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        self.last = time.monotonic()
        print(f"[{self.name} {self.elapsed():5.0f}s] {text}", flush=True)

    def echo(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.write(line)
            self.say(line.rstrip())

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.quiet_s:
            self.say(f"... still running (its stderr: {self.stderr})")


def run_bench(bench: Bench, argv: list[str], out: Path, python: str, limit_s: float) -> Outcome:
    """Run `bench` to its end or its time limit; its outcome, judged by `report.outcome`."""
    json_path = out / f"{bench.name}.json"
    json_path.unlink(missing_ok=True)  # an old file must not pass for this run's
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", f"bench.{bench.name}", *argv, "--json", str(json_path)]
    stdout_log, stderr_log = logs / f"{bench.name}.stdout.log", logs / f"{bench.name}.stderr.log"
    with stdout_log.open("w") as log, stderr_log.open("w") as err:
        progress = Progress(bench.name, log, quiet_s=60, stderr=stderr_log)
        progress.say(f"{bench.what}: {' '.join(command[1:])}")
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group, so a time limit stops its children
        )
        echo = threading.Thread(target=progress.echo, args=(proc.stdout,), daemon=True)
        echo.start()
        returncode = wait(proc, progress, limit_s)
        echo.join(timeout=10)
    log_text = stderr_log.read_text(errors="replace") or stdout_log.read_text(errors="replace")
    result = outcome(bench.name, returncode, progress.elapsed(), json_path, log_text)
    result.command = command
    progress.say("ok" if result.ok else f"FAILED: {result.failure}")
    for line in result.tail if not result.ok else []:
        progress.say(f"  {line}")
    return result


def wait(proc: subprocess.Popen[str], progress: Progress, limit_s: float) -> int | None:
    """The exit status, or None when the run passed `limit_s` and its process group was stopped."""
    while progress.elapsed() < limit_s:
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            progress.tick()
    for sig, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        os.killpg(proc.pid, sig)  # the group this run started, nothing else
        try:
            proc.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    return None


def write_reports(outcomes: list[Outcome], out: Path, quick: bool, argv: Sequence[str]) -> str:
    """results.json and results.md under `out`; the Markdown, to print."""
    machine = machine_info(ROOT)
    results = {
        "machine": machine,
        "quick": quick,
        "command": ["bench/run_all", *argv],
        "benches": [one.to_json() for one in outcomes],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(outcomes, machine, quick)
    (out / "results.md").write_text(table)
    return table


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of minutes")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--skip-infinity", action="store_true", help="serving: no infinity-emb peer")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    p.add_argument("--python", default=venv_python(), help="interpreter for the benches")
    p.add_argument("--limit-s", type=float, default=3600, help="time limit of each bench")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    benches = select(args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, bench in enumerate(benches, 1):
        print(f"== {i}/{len(benches)} {bench.name}", flush=True)
        bench_args = bench_argv(bench, args.quick, args.skip_infinity)
        outcomes.append(run_bench(bench, bench_args, args.out, args.python, args.limit_s))
    table = write_reports(outcomes, args.out, args.quick, argv)
    print(f"\n{table}\nwritten: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0 if all(one.ok for one in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

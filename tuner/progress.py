"""Progress of long tuner work as log lines: `stage=training step=120/400 pairs/s=35.2 eta=8s`.

A stage (training steps, scoring passes, export, int8 checks, a reindex) asks for a
`StageProgress` with `stage(name, unit, total)` and advances it; it logs one line when it starts,
at most one every `interval_s` in between, and one when it ends, through the current
`ProgressLog`'s `say`: by default this module's logger, every `DEFAULT_INTERVAL_S`. A process
that knows more binds its own reporter around the work:

    with reporting(ProgressLog(say=lambda line: log.info("task %s: %s", task_id, line))):
        run_training_iteration(...)  # every stage below reports through it

The tuner worker does this per task (`tuner.worker.runner`), with
`tuner.worker.progress_interval_s`, so its log shows each task's stages between the OpenSearch
request lines. `say` may raise to stop the work: the worker raises there once its lease is lost.
The binding is a context variable, so the training loops need no extra parameter; a thread that
reports (the reindex writer) gets the `StageProgress` itself, created on the binding thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

__all__ = [
    "DEFAULT_INTERVAL_S",
    "SLICE",
    "ProgressLog",
    "StageProgress",
    "current",
    "format_duration",
    "in_slices",
    "progress_line",
    "reporting",
    "stage",
]

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 5.0
SLICE = 512  # items per progress step of one long call (`in_slices`): a few seconds of embedding
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ProgressLog:
    """Where stages report: `say(line)` at most every `interval_s` per stage, by `clock`."""

    say: Callable[[str], None] = log.info
    interval_s: float = DEFAULT_INTERVAL_S
    clock: Callable[[], float] = field(default=time.monotonic)

    def stage(
        self,
        name: str,
        unit: str,
        total: int | None = None,
        *,
        rate_unit: str | None = None,
        per_unit: float = 1.0,
    ) -> StageProgress:
        """A stage counting `unit`s; its rate is in `rate_unit` (default `unit` + "s"), each
        unit worth `per_unit` of them (a training step is `batch_size` pairs)."""
        return StageProgress(self, name, unit, total, rate_unit or f"{unit}s", per_unit)


_DEFAULT = ProgressLog()
_current: ContextVar[ProgressLog | None] = ContextVar("tuner_progress", default=None)


def current() -> ProgressLog:
    """The reporter bound by the innermost `reporting`, else the module logger's."""
    return _current.get() or _DEFAULT


@contextmanager
def reporting(reporter: ProgressLog) -> Iterator[ProgressLog]:
    """Stages started inside report through `reporter`."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def stage(
    name: str,
    unit: str,
    total: int | None = None,
    *,
    rate_unit: str | None = None,
    per_unit: float = 1.0,
) -> StageProgress:
    """`current().stage(...)`: a stage reporting through the bound reporter."""
    return current().stage(name, unit, total, rate_unit=rate_unit, per_unit=per_unit)


class StageProgress:
    """One stage's count of done units; logs its start, then every `interval_s`, then its end.

    It starts at `with` (at 0) or at its first `update`, whichever comes first, so a resumed
    stage (a reindex picking up its checkpoint) counts its rate from where it restarted."""

    def __init__(
        self,
        reporter: ProgressLog,
        name: str,
        unit: str,
        total: int | None,
        rate_unit: str,
        per_unit: float,
    ) -> None:
        self.reporter, self.name, self.unit = reporter, name, unit
        self.total, self.rate_unit, self.per_unit = total, rate_unit, per_unit
        self.done = 0
        self.fields: dict[str, object] = {}  # shown after the rate, e.g. the last loss
        self._started_at: float | None = None
        self._first_done = 0
        self._last_line_at = 0.0
        self._finished = False

    def start(self, done: int = 0, total: int | None = None) -> StageProgress:
        """Count from `done` now and log the start line (again: no effect)."""
        if self._started_at is None:
            self.done = self._first_done = done
            self.total = total if total is not None else self.total
            self._started_at = self._last_line_at = self.reporter.clock()
            self.reporter.say(self._line(0.0, "started"))
        return self

    def update(self, done: int, total: int | None = None, /, **fields: object) -> None:
        """`done` units so far (of `total`, when it became known); a line if one is due."""
        self.fields.update(fields)
        if self._started_at is None:
            self.start(done, total)
            return
        self.done = done
        self.total = total if total is not None else self.total
        now = self.reporter.clock()
        if now - self._last_line_at >= self.reporter.interval_s:
            self._last_line_at = now
            self.reporter.say(self._line(now - self._started_at))

    def advance(self, units: int = 1, **fields: object) -> None:
        """`units` more done."""
        self.update(self.done + units, **fields)

    def finish(self) -> None:
        """Log the end line (once; nothing for a stage that never started)."""
        if self._started_at is None or self._finished:
            return
        self._finished = True
        elapsed = self.reporter.clock() - self._started_at
        self.reporter.say(self._line(elapsed, f"done in {format_duration(elapsed)}"))

    def __enter__(self) -> StageProgress:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.finish()
        elif self._started_at is not None and not self._finished:
            self._finished = True  # the error itself is logged by whoever handles it
            elapsed = self.reporter.clock() - self._started_at
            # the stage's own error goes on, even if `say` refuses this line (a lost lease)
            with suppress(Exception):
                self.reporter.say(self._line(elapsed, f"stopped: {kind.__name__}", eta=False))

    def _line(self, elapsed_s: float, note: str = "", eta: bool = True) -> str:
        return progress_line(
            self.name,
            self.unit,
            self.done,
            self.total,
            elapsed_s,
            counted=self.done - self._first_done,
            rate_unit=self.rate_unit,
            per_unit=self.per_unit,
            eta=eta and not note,
            extra=self.fields,
            note=note,
        )


def in_slices(
    fn: Callable[[Sequence[T]], R],
    done: StageProgress,
    join: Callable[[list[R]], R],
    size: int = SLICE,
) -> Callable[[Sequence[T]], R]:
    """`fn` called on slices of at most `size` items, `done` advanced by each slice's length,
    the results joined: one long call (embedding a corpus) reports as it goes."""

    def run(items: Sequence[T]) -> R:
        if len(items) <= size:
            result = fn(items)
            done.advance(len(items))
            return result
        results = []
        for start in range(0, len(items), size):
            part = items[start : start + size]
            results.append(fn(part))
            done.advance(len(part))
        return join(results)

    return run


def progress_line(
    stage: str,
    unit: str,
    done: int,
    total: int | None,
    elapsed_s: float,
    *,
    counted: int | None = None,
    rate_unit: str | None = None,
    per_unit: float = 1.0,
    eta: bool = True,
    eta_cap_s: float | None = None,
    extra: Mapping[str, object] | None = None,
    note: str = "",
) -> str:
    """`stage=<stage> <unit>=<done>/<total> <rate_unit>/s=<rate> eta=<left> [k=v ...] [note]`.

    The rate is `counted` units (default `done`) times `per_unit` over `elapsed_s`; the ETA is
    the units left at that rate, at most `eta_cap_s` (a deadline that ends the stage anyway).
    Until something was counted there is no rate, and the ETA is `eta_cap_s` or left out."""
    counted = done if counted is None else counted
    parts = [f"stage={stage}", f"{unit}={done}" + (f"/{total}" if total is not None else "")]
    left: float | None = None
    if counted > 0 and elapsed_s > 0:
        per_s = counted / elapsed_s
        parts.append(f"{rate_unit or unit + 's'}/s={per_s * per_unit:.1f}")
        left = max(0, total - done) / per_s if total is not None else None
    if eta_cap_s is not None:
        left = max(0.0, eta_cap_s if left is None else min(left, eta_cap_s))
    if eta and left is not None:
        parts.append(f"eta={format_duration(left)}")
    parts += [f"{k}={v}" for k, v in (extra or {}).items()]
    return " ".join(parts + ([note] if note else []))


def format_duration(seconds: float) -> str:
    """`8s`, `2m05s`, `1h02m`: whole seconds, two units at most."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

"""Batches: sessions frozen for training, one JSON record per batch under `<home>/batches/`.

A batch holds the sessions whose query timestamp falls in its window [start, end). The window
starts where the previous batch ended and ends `grace` before the release time, so events that
arrive a little after their query still find it; once released a batch never changes. The record
(`batch-0003.json`: id, window, counts, session ids) is written atomically, so a crash leaves
either no batch or a whole one, and a failed iteration can run again on the same batch.

The queries a batch held out of its training (`tuner.splits`: drawn afresh per batch) are
recorded beside it when its first iteration starts, as `holdout/batch-0003.json` (id, sorted
query keys): later iterations re-split the batch by that record, and a rerun reuses it.

Where they are kept is the `Batches` seam: `BatchStore` (these files, the default) or
`tuner.batch_store.OpenSearchBatchStore` (`serving.state.backend: opensearch`, shared by hosts).
Both record a batch only if its id is free: the same record again is a no-op (a retried write),
a different one is refused with `BatchConflictError`, so of two workers freezing the next batch
at once one wins and the other adopts it (`tuner.worker.stages`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from tuner.errors import BatchConflictError, NoTrainingDataError, TunerError
from tuner.sessions import Session

BATCH_ID = re.compile(r"batch-[0-9]{4,9}")  # what `batch_name` names a batch
HOLDOUT_DIR = "holdout"

__all__ = [
    "Batch",
    "BatchStore",
    "Batches",
    "ReleasedBatch",
    "SessionSource",
    "already_released",
    "batch_name",
    "batch_of",
    "check_batch_id",
    "not_released",
    "release_batch",
    "reload_batch",
]


class SessionSource(Protocol):
    """Where sessions come from (`tuner.sessions.OpenSearchSessions`)."""

    def sessions(self, since: datetime | None, until: datetime | None) -> list[Session]: ...

    def sessions_by_id(self, query_ids: Sequence[str]) -> list[Session]: ...


@dataclass(frozen=True)
class Batch:
    """A released batch as recorded on disk."""

    batch_id: str
    window_start: str | None  # ISO-8601 UTC; None = from the first session ever
    window_end: str
    released_at: str
    sessions: int
    queries: int
    events: int
    session_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReleasedBatch:
    """A batch and its sessions, as read at release (or reload) time."""

    batch: Batch
    sessions: list[Session]


class Batches(Protocol):
    """Where released batches and their held-out records are kept, in release order."""

    def list(self) -> list[Batch]: ...

    def get(self, batch_id: str) -> Batch: ...

    def save(self, batch: Batch) -> None:
        """Record `batch` if its id is free; the same record again is a no-op, a different
        one raises `BatchConflictError`."""
        ...

    def save_holdout(self, batch_id: str, query_keys: Iterable[str]) -> None: ...

    def holdout(self, batch_id: str) -> frozenset[str] | None: ...


def batch_name(number: int) -> str:
    """The id of the `number`-th released batch (1-based): `batch-0001`."""
    return f"batch-{number:04d}"


def batch_of(record: dict[str, Any]) -> Batch:
    """A `Batch` from its JSON record."""
    return Batch(**{**record, "session_ids": tuple(record["session_ids"])})


def check_batch_id(batch_id: str) -> None:
    """Refuse an id no released batch can have (it also names a file or a document)."""
    if not BATCH_ID.fullmatch(batch_id):
        raise TunerError(f"batch id {batch_id!r} is not a released batch's name (batch-NNNN)")


def not_released(batch_id: str, known: list[Batch]) -> TunerError:
    """The error for a batch id that names no released batch, listing those that exist."""
    return TunerError(
        f"batch {batch_id!r} is not released; released batches: {[b.batch_id for b in known]}"
    )


def already_released(batch: Batch, where: str) -> BatchConflictError:
    """The error for a different batch recorded under `batch`'s id first."""
    return BatchConflictError(
        f"{batch.batch_id} in {where} was released by another process meanwhile (a different "
        "window or sessions): a batch, once released, never changes; list the batches again"
    )


class BatchStore:
    """Released batches as `<root>/batch-NNNN.json`, in release order."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def list(self) -> list[Batch]:
        if not self.root.is_dir():
            return []
        return [self._read(path) for path in sorted(self.root.glob("batch-*.json"))]

    def get(self, batch_id: str) -> Batch:
        check_batch_id(batch_id)
        path = self.root / f"{batch_id}.json"
        if not path.is_file():
            raise not_released(batch_id, self.list())
        return self._read(path)

    def save(self, batch: Batch) -> None:
        """Record `batch` unless its file exists (a hard link, atomic and create-only)."""
        path = self.root / f"{batch.batch_id}.json"
        if not _create_json(path, asdict(batch)) and self._read(path) != batch:
            raise already_released(batch, str(self.root))

    def save_holdout(self, batch_id: str, query_keys: Iterable[str]) -> None:
        """Record the query keys `batch_id` held out of its training."""
        record = {"batch_id": batch_id, "queries": sorted(set(query_keys))}
        _write_json(self.root / HOLDOUT_DIR / f"{batch_id}.json", record)

    def holdout(self, batch_id: str) -> frozenset[str] | None:
        """The query keys `batch_id` held out, or None when none were recorded (a batch never
        trained, or trained before hold-outs were recorded)."""
        path = self.root / HOLDOUT_DIR / f"{batch_id}.json"
        if not path.is_file():
            return None
        return frozenset(json.loads(path.read_text())["queries"])

    def _read(self, path: Path) -> Batch:
        return batch_of(json.loads(path.read_text()))


def release_batch(
    store: Batches, source: SessionSource, now: datetime, grace: timedelta
) -> ReleasedBatch:
    """Freeze the sessions logged since the last batch and until `now - grace` as a new batch.

    `NoTrainingDataError` (and nothing recorded) when the window holds no new session;
    `BatchConflictError` when another process released the next batch after `store` was listed.
    """
    previous = store.list()
    start = datetime.fromisoformat(previous[-1].window_end) if previous else None
    end = now.astimezone(UTC) - grace
    if start is not None and end <= start:
        raise NoTrainingDataError(
            f"no window to release: the last batch {previous[-1].batch_id} ends at {start}, "
            f"after now - grace ({end}); wait or lower tuner.batches.grace_s"
        )
    taken = {sid for batch in previous for sid in batch.session_ids}
    sessions = [s for s in source.sessions(start, end) if s.query_id not in taken]
    if not sessions:
        raise NoTrainingDataError(
            f"no sessions to train on: the UBI query index holds no new queries between "
            f"{start or 'the beginning'} and {end} (now - grace {grace.total_seconds():.0f} s)"
        )
    batch = _batch_record(batch_name(len(previous) + 1), start, end, now, sessions)
    store.save(batch)
    return ReleasedBatch(batch, sessions)


def reload_batch(store: Batches, source: SessionSource, batch_id: str) -> ReleasedBatch:
    """A released batch with its sessions read again (late events included)."""
    batch = store.get(batch_id)
    return ReleasedBatch(batch, source.sessions_by_id(batch.session_ids))


def _batch_record(
    batch_id: str, start: datetime | None, end: datetime, now: datetime, sessions: list[Session]
) -> Batch:
    return Batch(
        batch_id=batch_id,
        window_start=start.isoformat() if start is not None else None,
        window_end=end.isoformat(),
        released_at=now.astimezone(UTC).isoformat(),
        sessions=len(sessions),
        queries=len({s.user_query for s in sessions}),
        events=sum(len(s.actions) for s in sessions),
        session_ids=tuple(s.query_id for s in sessions),
    )


def _write_json(path: Path, record: object) -> None:
    """Write `record` to `path` atomically (a temporary file renamed over it)."""
    tmp = _temporary_json(path, record)
    os.replace(tmp, path)


def _create_json(path: Path, record: object) -> bool:
    """Write `record` to `path` atomically unless `path` exists; False if it did."""
    tmp = _temporary_json(path, record)
    try:
        os.link(tmp, path)  # fails if present: of two writers, one creates it
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _temporary_json(path: Path, record: object) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out, indent=1)
    return tmp

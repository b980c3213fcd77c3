"""Where a reindex stands, and where that is kept: a JSON file, or an OpenSearch document.

`serving.state.backend` chooses: `local` keeps one JSON file per destination alias under
`$CLICKTUNE_HOME/reindex` (`CheckpointStore`); `opensearch` keeps one document per alias in
`serving.state.checkpoints_index` (`OpenSearchCheckpointStore`), so a reindex killed on one host
is resumed (`--resume`, or the next tuner worker) on another from the same checkpoint.

The OpenSearch store writes with optimistic concurrency: each save is conditional on the
document being the one this store last read or wrote (`if_seq_no`), and a first save only
creates. Two processes resuming the same reindex at once cannot both advance it: the one that
saves second gets `ReindexError` and stops, its pages already refused by `op_type=create`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from serving.errors import ReindexError, StateConflictError, StateError
from serving.state.documents import OpenSearchDocuments

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "CheckpointStores",
    "Checkpoints",
    "OpenSearchCheckpointStore",
    "checkpoint_store",
]


@dataclass
class Checkpoint:
    """Where a reindex stands; saved after every written batch."""

    source: str
    target: str
    model_version: str
    alias: str
    total: int
    written: int = 0
    search_after: list[Any] | None = None
    started_at: float = 0.0
    # the Ray engine's point-in-time slices, each with its own search_after and count
    # (serving/index/reindex_slices.py); None for the local engine
    slices: list[dict[str, Any]] | None = None


class Checkpoints(Protocol):
    """Where the checkpoint of the reindex to one alias is kept; `location` names it."""

    location: str

    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> None: ...

    def clear(self) -> None: ...


# destination alias -> its checkpoint store (a file, an OpenSearch document)
CheckpointStores: TypeAlias = Callable[[str], Checkpoints]


class CheckpointStore:
    """One JSON checkpoint per destination alias in `root`, replaced atomically."""

    def __init__(self, root: Path, alias: str) -> None:
        self.path = Path(root) / f"{alias}.json"
        self.location = str(self.path)

    def load(self) -> Checkpoint | None:
        try:
            return Checkpoint(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ReindexError(f"checkpoint {self.path} is unreadable: {exc}") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", dir=self.path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(checkpoint), out)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def checkpoint_store(checkpoints: Path | CheckpointStores, alias: str) -> Checkpoints:
    """The checkpoint store of the reindex to `alias`: a JSON file when `checkpoints` is a
    folder, else what the factory `checkpoints` gives (an OpenSearch document)."""
    if isinstance(checkpoints, Path):
        return CheckpointStore(checkpoints, alias)
    return checkpoints(alias)


class OpenSearchCheckpointStore:
    """The checkpoint of the reindex to `alias` as one document of `documents`' index."""

    def __init__(self, documents: OpenSearchDocuments, alias: str) -> None:
        self.documents = documents
        self.alias = alias
        self.doc_id = f"reindex:{alias}"
        self.location = f"{self.doc_id!r} in {documents.where}"
        self._seq: tuple[int, int] | None = None  # of the document this store last read or wrote

    def load(self) -> Checkpoint | None:
        try:
            stored = self.documents.get(self.doc_id)
        except StateError as exc:
            raise ReindexError(f"cannot read the reindex checkpoint: {exc}") from exc
        self._seq = None if stored is None else stored.seq
        if stored is None:
            return None
        try:
            return Checkpoint(**stored.body["checkpoint"])
        except (KeyError, TypeError) as exc:
            raise ReindexError(f"checkpoint {self.location} is unreadable: {exc}") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        body = {"kind": "reindex", "alias": self.alias, "checkpoint": asdict(checkpoint)}
        try:
            self._seq = self.documents.put(self.doc_id, body, after=self._seq)
        except StateConflictError as exc:
            raise ReindexError(
                f"the checkpoint {self.location} was changed by another process (a second "
                f"reindex to {self.alias!r}, or an abandon): this one stops; {exc}"
            ) from exc
        except StateError as exc:
            raise ReindexError(f"cannot save the reindex checkpoint: {exc}") from exc

    def clear(self) -> None:
        try:
            self.documents.delete(self.doc_id)
        except StateError as exc:
            raise ReindexError(f"cannot clear the reindex checkpoint: {exc}") from exc
        self._seq = None

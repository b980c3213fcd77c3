"""Promote and roll back the production model together with the document alias.

Promote VERSION: make sure an index built by VERSION holds the live documents (reuse a kept one
whose count matches, else reindex first: the caller's `reindex(version)`), move the document
alias onto it (one atomic `_aliases` call), move the registry alias (with history), then tell the
replicas on the control topic (they also find the alias move by polling the registry).
Rollback: the registry alias goes back to the version it named before, and the document alias
to that version's newest kept index (refused with the reason when none is kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from serving.errors import RegistryError, ServingError
from serving.index_versions import latest_index_of
from serving.registry import LocalRegistry
from serving.replicas import model_changed
from serving.vector_index import DocumentIndex

__all__ = ["Rollout", "RolloutResult"]

log = logging.getLogger(__name__)

Publish = Callable[[dict[str, Any]], None]
Reindex = Callable[[str], Any]


@dataclass(frozen=True)
class RolloutResult:
    """What moved: the registry alias, the model versions, the document index, and how."""

    alias: str
    version: str
    previous: str | None
    index: str
    previous_index: str | None
    reindexed: bool
    published: bool
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Rollout:
    """Moves the registry alias and the document alias as one step, then notifies replicas."""

    def __init__(
        self,
        registry: LocalRegistry,
        doc_index: DocumentIndex,
        reindex: Reindex,
        publish: Publish | None = None,
        alias: str = "production",
    ) -> None:
        self.registry = registry
        self.doc_index = doc_index
        self.reindex = reindex
        self.publish = publish
        self.alias = alias

    def promote(self, version: str) -> RolloutResult:
        """Serve `version` everywhere: its index behind the document alias, the alias on it."""
        target = self.registry.get(version).version
        previous = self.registry.aliases().get(self.alias)
        live = self.doc_index.live_index()
        index, reindexed = self._index_for(target, live)
        if index != live:
            self.doc_index.swap_alias(index)
        if previous != target:
            self.registry.set_alias(self.alias, target)
        changed_dim = previous is not None and (
            self.registry.get(previous).dimension != self.registry.get(target).dimension
        )
        return self._announce(target, previous, index, live, reindexed, changed_dim)

    def rollback(self) -> RolloutResult:
        """Go back to the version the alias named before, and to its kept index."""
        history = self.registry.alias_history(self.alias)
        if len(history) < 2:
            raise RegistryError(
                f"alias {self.alias!r} has no previous version to roll back to (history: {history})"
            )
        current, previous = history[-1], history[-2]
        index = latest_index_of(self.doc_index, previous)
        if index is None:
            raise ServingError(
                f"no kept index for model {previous!r} (retention removed it); run "
                f"`clicktune models promote {previous}` to reindex with it instead"
            )
        live = self.doc_index.live_index()
        warning = self._staleness(index, live)
        if index != live:
            self.doc_index.swap_alias(index)
        self.registry.rollback_alias(self.alias)
        changed_dim = self.registry.get(previous).dimension != self.registry.get(current).dimension
        result = self._announce(previous, current, index, live, False, changed_dim)
        return RolloutResult(**{**result.as_dict(), "warning": warning or result.warning})

    def _index_for(self, version: str, live: str | None) -> tuple[str, bool]:
        kept = latest_index_of(self.doc_index, version)
        if kept is not None and live is not None and self._staleness(kept, live) is None:
            return kept, False
        if live is None:
            raise ServingError(
                f"alias {self.doc_index.alias!r} does not exist; run `clicktune index` first"
            )
        report = self.reindex(version)
        return report.index, True

    def _staleness(self, index: str, live: str | None) -> str | None:
        if live is None or index == live:
            return None
        have, want = self.doc_index.refresh(index), self.doc_index.refresh(live)
        if have == want:
            return None
        return f"kept index {index!r} holds {have} documents, the live one {want}"

    def _announce(
        self,
        version: str,
        previous: str | None,
        index: str,
        previous_index: str | None,
        reindexed: bool,
        changed_dim: bool,
    ) -> RolloutResult:
        published, warning = False, None
        if self.publish is not None:
            try:
                self.publish(model_changed(self.alias, version, reindex=changed_dim))
                published = True
            except ServingError as exc:  # replicas still find the alias move by polling
                warning = str(exc)
                log.warning("%s", exc)
        return RolloutResult(
            self.alias, version, previous, index, previous_index, reindexed, published, warning
        )

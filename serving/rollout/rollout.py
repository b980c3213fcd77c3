"""Promote and roll back the production model together with the document alias.

Promote VERSION: make sure an index built by VERSION holds the live documents (reuse a kept one
whose count matches, else reindex first: the caller's `reindex(version)`), move the document
alias onto it (one atomic `_aliases` call), move the registry alias (with history), then tell the
replicas on the control topic (they also find the alias move by polling the registry).
Rollback: the registry alias goes back to the version it named before, and the document alias
to that version's newest kept index (refused with the reason when none is kept).
A caller that may not reindex (the admin API without `reindex: true`) passes
`allow_reindex=False` and gets `ReindexRequiredError` instead, before anything moved. When the
registry alias cannot move, the document alias goes back: the two never name different models.

A query model ("query model X over document model Y", `ModelVersion.document_model`) embeds
queries only and searches Y's vectors: it is promoted only while the live index was built by Y,
and then only the registry alias moves (no document alias, no reindex); over any other index it
is refused with `PairingError`, naming both models, before anything moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from serving.errors import PairingError, RegistryError, ReindexRequiredError, ServingError
from serving.index.index_versions import index_version, latest_index_of
from serving.index.vector_index import DocumentIndex
from serving.models.registries import ModelRegistry
from serving.models.registry import ModelVersion
from serving.rollout.replicas import model_changed

__all__ = ["Rollout", "RolloutResult", "check_pairing", "paired_index"]

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
        registry: ModelRegistry,
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

    def promote(self, version: str, *, allow_reindex: bool = True) -> RolloutResult:
        """Serve `version` everywhere: its index behind the document alias, the alias on it.
        Without `allow_reindex`, a version with no current kept index is refused unmoved; a
        query model only ever serves over the live index, which its document model must own."""
        model = self.registry.get(version)
        target = model.version
        previous = self.registry.aliases().get(self.alias)
        live = self.doc_index.live_index()
        if model.document_model is not None:
            index, reindexed = self._paired_index(model, live), False
        else:
            index, reindexed = self._index_for(target, live, allow_reindex)
        if index != live:
            self.doc_index.swap_alias(index)
        if previous != target:
            self._move_registry_alias(lambda: self.registry.set_alias(self.alias, target), live)
        changed_dim = previous is not None and (
            self.registry.get(previous).dimension != self.registry.get(target).dimension
        )
        return self._announce(target, previous, index, live, reindexed, changed_dim)

    def rollback_target(self) -> str:
        """The version a rollback would serve: the one the alias named before the current one."""
        history = self.registry.alias_history(self.alias)
        if len(history) < 2:
            raise RegistryError(
                f"alias {self.alias!r} has no previous version to roll back to (history: {history})"
            )
        return history[-2]

    def rollback(self, expected: str | None = None) -> RolloutResult:
        """Go back to the version the alias named before, and to its kept index; refused
        unmoved when that is not `expected` (the alias moved since the caller looked)."""
        previous = self.rollback_target()
        current = self.registry.alias_history(self.alias)[-1]
        if expected is not None and previous != expected:
            raise RegistryError(
                f"alias {self.alias!r} would roll back to {previous!r}, not {expected!r}: it "
                "moved meanwhile; look again and retry"
            )
        owner = self.registry.get(previous).document_model or previous
        index = latest_index_of(self.doc_index, owner)
        if index is None:
            raise ServingError(
                f"no kept index for model {owner!r} (retention removed it); run "
                f"`clicktune models promote {owner}` to reindex with it instead"
            )
        live = self.doc_index.live_index()
        warning = self._staleness(index, live)
        if index != live:
            self.doc_index.swap_alias(index)
        self._move_registry_alias(lambda: self.registry.rollback_alias(self.alias), live)
        changed_dim = self.registry.get(previous).dimension != self.registry.get(current).dimension
        result = self._announce(previous, current, index, live, False, changed_dim)
        return RolloutResult(**{**result.as_dict(), "warning": warning or result.warning})

    def _move_registry_alias(self, move: Callable[[], Any], live: str | None) -> None:
        """Run `move`; if it fails, put the document alias back on `live` so the registry alias
        and the document alias keep naming the same model."""
        try:
            move()
        except ServingError:
            if live is not None and self.doc_index.live_index() != live:
                self.doc_index.swap_alias(live)
            raise

    def _paired_index(self, model: ModelVersion, live: str | None) -> str:
        return paired_index(self.doc_index, model, live)

    def _index_for(self, version: str, live: str | None, allow_reindex: bool) -> tuple[str, bool]:
        kept = latest_index_of(self.doc_index, version)
        stale = None if kept is None else self._staleness(kept, live)
        if kept is not None and live is not None and stale is None:
            return kept, False
        if live is None:
            raise ServingError(
                f"alias {self.doc_index.alias!r} does not exist; run `clicktune index` first"
            )
        if not allow_reindex:
            why = stale or f"no index built by {version!r} is kept"
            raise ReindexRequiredError(
                f"model {version!r} needs a reindex before it can serve ({why}); nothing moved. "
                f"Run `clicktune models promote {version}`, or promote it with "
                '`"reindex": true` to re-embed the live documents with it first'
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


def paired_index(doc_index: DocumentIndex, model: ModelVersion, live: str | None = None) -> str:
    """The live index (`live`, default: read now), when the query `model`'s document model built
    it; else `PairingError` naming the pairing and the index's model."""
    live = live if live is not None else doc_index.live_index()
    if live is None:
        raise ServingError(f"alias {doc_index.alias!r} does not exist; run `clicktune index` first")
    built_by = index_version(doc_index, live)
    if built_by == model.document_model:
        return live
    owner = f"built by model {built_by!r}" if built_by else "not a versioned index"
    raise PairingError(
        f"query model {model.version!r} over document model {model.document_model!r} cannot "
        f"serve over the live index {live!r} ({owner}): it searches only the vectors of "
        f"{model.document_model!r}; nothing moved. Promote {model.document_model!r} first, "
        f"then {model.version!r}"
    )


def check_pairing(doc_index: DocumentIndex, model: ModelVersion) -> None:
    """Raise `PairingError` when query `model` would search a live index its document model did
    not build (a replica's hot-swap check); nothing while no document alias exists."""
    live = doc_index.live_index()
    if live is not None:
        paired_index(doc_index, model, live)

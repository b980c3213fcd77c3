"""An in-memory document index for rollout tests: versioned indexes, their counts, the alias."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from serving.config import IndexSettings


class FakeDocumentIndex:
    """The parts of `DocumentIndex` that `Rollout` and `latest_index_of` read and move."""

    def __init__(self, settings: IndexSettings | None = None) -> None:
        self.settings = settings or IndexSettings()
        self.counts: dict[str, int] = {}  # index -> documents, in creation order
        self.live: str | None = None
        self.client = SimpleNamespace(indices=_Indices(self))

    @property
    def alias(self) -> str:
        return self.settings.alias

    def build(self, version: str, docs: int = 3, *, live: bool = False) -> str:
        """A complete index built by model `version`, holding `docs` documents."""
        prefix = f"{self.settings.prefix}__{version}__"
        name = f"{prefix}{1 + sum(i.startswith(prefix) for i in self.counts)}"
        self.counts[name] = docs
        if live:
            self.live = name
        return name

    def live_index(self) -> str | None:
        return self.live

    def swap_alias(self, index: str) -> str | None:
        previous, self.live = self.live, index
        return previous

    def refresh(self, index: str) -> int:
        return self.counts[index]


class _Indices:
    """`client.indices.get` as `serving.index.index_versions` reads it."""

    def __init__(self, docs: FakeDocumentIndex) -> None:
        self.docs = docs

    def get(self, index: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            name: {
                "aliases": {self.docs.alias: {}} if name == self.docs.live else {},
                "settings": {"index": {"creation_date": str(order)}},
            }
            for order, name in enumerate(self.docs.counts)
        }


class FakeReindex:
    """Re-embeds the live documents into a new index of the version and moves the alias, as
    `clicktune reindex` does; records the versions it ran for."""

    def __init__(self, docs: FakeDocumentIndex) -> None:
        self.docs = docs
        self.runs: list[str] = []

    def __call__(self, version: str) -> Any:
        self.runs.append(version)
        live = self.docs.live
        index = self.docs.build(version, self.docs.counts[live] if live else 0)
        self.docs.swap_alias(index)
        return SimpleNamespace(index=index)

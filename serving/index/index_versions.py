"""Which versioned index belongs to which model, which ones receive writes, and retention.

Index names are `<prefix>__<model-version>__<n>`. Besides the live alias (`docs`), two aliases
mark indexes that must receive every document write (dual writes):

    docs_next        the index a reindex is building (set before its first read, removed by the
                     same atomic `_aliases` call that moves `docs` onto it)
    docs_candidate   the index of an A/B experiment's candidate arm

Aliases are where this state lives because every replica already reads them from OpenSearch,
they move atomically, and a crashed reindex leaves `docs_next` behind for `--resume` to find.
"""

from __future__ import annotations

import re
from typing import Any

from opensearchpy.exceptions import NotFoundError, OpenSearchException

from serving.errors import DocumentIndexError
from serving.index.vector_index import DocumentIndex

__all__ = [
    "alias_holders",
    "index_version",
    "latest_index_of",
    "move_aliases",
    "prune_indexes",
    "write_targets",
]


def index_version(doc_index: DocumentIndex, index: str) -> str | None:
    """The model version in the name `<prefix>__<version>__<n>`, None for another name."""
    pattern = re.escape(doc_index.settings.prefix) + r"__([a-z0-9][a-z0-9.-]*)__\d+$"
    match = re.match(pattern, index)
    return match.group(1) if match else None


def alias_holders(doc_index: DocumentIndex, alias: str) -> list[str]:
    """The indexes `alias` points at (sorted), empty when it does not exist."""
    try:
        return sorted(doc_index.client.indices.get_alias(name=alias))
    except NotFoundError:
        return []
    except OpenSearchException as exc:
        raise DocumentIndexError(f"cannot read alias {alias!r}: {exc}") from exc


def write_targets(doc_index: DocumentIndex) -> list[str]:
    """Every index a document write must reach: the live one, then reindex/candidate ones."""
    s = doc_index.settings
    targets: list[str] = []
    for alias in (s.alias, s.next_alias, s.candidate_alias):
        targets += [i for i in alias_holders(doc_index, alias) if i not in targets]
    return targets


def move_aliases(doc_index: DocumentIndex, actions: list[dict[str, Any]]) -> None:
    """Apply alias `actions` in one atomic `_aliases` call."""
    try:
        doc_index.client.indices.update_aliases(body={"actions": actions})
    except OpenSearchException as exc:
        raise DocumentIndexError(f"alias change {actions} refused: {exc}") from exc


def _versioned(doc_index: DocumentIndex) -> dict[str, dict[str, Any]]:
    try:
        found = doc_index.client.indices.get(
            index=f"{doc_index.settings.prefix}__*", params={"expand_wildcards": "open"}
        )
    except NotFoundError:
        return {}
    except OpenSearchException as exc:
        raise DocumentIndexError(f"cannot list the versioned indexes: {exc}") from exc
    return {name: body for name, body in found.items() if index_version(doc_index, name)}


def _created(body: dict[str, Any]) -> int:
    return int(body["settings"]["index"].get("creation_date", 0))


def latest_index_of(doc_index: DocumentIndex, version: str) -> str | None:
    """The newest index built for model `version` (a kept or live one), None if there is none."""
    own = {
        name: body
        for name, body in _versioned(doc_index).items()
        if index_version(doc_index, name) == version
        and doc_index.settings.next_alias not in body.get("aliases", {})
    }
    return max(own, key=lambda n: _created(own[n])) if own else None


def prune_indexes(doc_index: DocumentIndex, keep: int) -> list[str]:
    """Delete versioned indexes without any alias beyond the `keep` newest; return them."""
    idle = {n: b for n, b in _versioned(doc_index).items() if not b.get("aliases")}
    ordered = sorted(idle, key=lambda n: _created(idle[n]), reverse=True)
    removed = ordered[keep:]
    for name in removed:
        try:
            doc_index.client.indices.delete(index=name)
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot delete retired index {name!r}: {exc}") from exc
    return removed

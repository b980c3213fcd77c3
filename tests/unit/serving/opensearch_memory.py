"""An in-memory OpenSearch client: just the calls `Reindexer.run` makes (indexes, aliases, point
in time + search_after pages, bulk creates), so a reindex runs without a server."""

from __future__ import annotations

import fnmatch
import json
import zlib
from types import SimpleNamespace
from typing import Any

from opensearchpy.serializer import JSONSerializer


class MemoryOpenSearch:
    """Indexes of documents by id, and the aliases of each index."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}  # index -> id -> _source
        self.aliases: dict[str, set[str]] = {}
        self.indices = _Indices(self)
        self.transport = SimpleNamespace(serializer=JSONSerializer())
        self._pit: str | None = None

    def add_index(self, index: str, docs: dict[str, dict[str, Any]], *aliases: str) -> None:
        self.docs[index] = {doc_id: dict(source) for doc_id, source in docs.items()}
        self.aliases[index] = set(aliases)

    def count(self, index: str) -> dict[str, int]:
        return {"count": len(self.docs[index])}

    def create_pit(self, index: str, params: dict[str, Any]) -> dict[str, str]:
        self._pit = index
        return {"pit_id": "pit-1"}

    def delete_pit(self, body: dict[str, Any]) -> None:
        self._pit = None

    def search(self, body: dict[str, Any], index: str | None = None) -> dict[str, Any]:
        """`_id`-sorted pages after `search_after`, with `_source` excludes or none; `slice`
        keeps the ids of one slice (a stable hash of the id, as OpenSearch's)."""
        docs = self.docs[index or str(self._pit)]
        after = body.get("search_after", [""])[0]
        part = body.get("slice")
        ids = sorted(
            i
            for i in docs
            if i > after and (part is None or zlib.crc32(i.encode()) % part["max"] == part["id"])
        )[: body["size"]]
        wanted = body.get("_source", True)
        excluded = set(wanted.get("excludes", [])) if isinstance(wanted, dict) else set()
        hits: list[dict[str, Any]] = [{"_id": i, "sort": [i]} for i in ids]
        if wanted:
            for hit in hits:
                hit["_source"] = {k: v for k, v in docs[hit["_id"]].items() if k not in excluded}
        return {"hits": {"hits": hits}}

    def bulk(self, body: str, **_: Any) -> dict[str, Any]:
        """`create` actions only, as the reindex sends them; 409 for an id already there."""
        lines = body.strip().split("\n")
        items = []
        for action, source in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action)["create"]
            index, doc_id = meta["_index"], meta["_id"]
            status = 409 if doc_id in self.docs[index] else 201
            self.docs[index].setdefault(doc_id, json.loads(source))
            items.append({"create": {"_index": index, "_id": doc_id, "status": status}})
        return {"errors": any(i["create"]["status"] >= 300 for i in items), "items": items}


class _Indices:
    def __init__(self, client: MemoryOpenSearch) -> None:
        self.client = client

    def get_alias(self, name: str | None = None, index: str | None = None) -> dict[str, Any]:
        aliases = self.client.aliases
        names = [index] if index is not None else [i for i in aliases if name in aliases[i]]
        return {i: {"aliases": {a: {} for a in aliases[i]}} for i in names}

    def get(self, index: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            name: {
                "aliases": {a: {} for a in self.client.aliases[name]},
                "settings": {"index": {"creation_date": str(order)}},
            }
            for order, name in enumerate(self.client.docs)
            if fnmatch.fnmatch(name, index)
        }

    def create(self, index: str, body: dict[str, Any]) -> None:
        self.client.add_index(index, {})

    def refresh(self, index: str) -> None:
        return None

    def update_aliases(self, body: dict[str, Any]) -> None:
        for action in body["actions"]:
            ((verb, target),) = action.items()
            change = set.add if verb == "add" else set.discard
            change(self.client.aliases[target["index"]], target["alias"])

    def delete(self, index: str) -> None:
        del self.client.docs[index], self.client.aliases[index]

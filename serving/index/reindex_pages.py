"""Pages of a reindex: read a point in time in `_id` order (whole or one slice), write pages
with `op_type=create`. Both engines (serving/index/reindex.py, serving/index/reindex_ray.py) use
these, so a page read twice after a crash never writes a document twice or overwrites a newer
one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from opensearchpy.exceptions import OpenSearchException
from opensearchpy.helpers import streaming_bulk

from serving.errors import DocumentIndexError, ReindexError

__all__ = ["PIT_KEEP_ALIVE", "close_pit", "create_documents", "open_pit", "read_pages"]

log = logging.getLogger(__name__)

PIT_KEEP_ALIVE = "10m"


def open_pit(client: Any, source: str) -> str:
    """A point in time on `source` (kept alive `PIT_KEEP_ALIVE` between pages); its id."""
    try:
        return str(client.create_pit(index=source, params={"keep_alive": PIT_KEEP_ALIVE})["pit_id"])
    except OpenSearchException as exc:
        raise ReindexError(f"cannot open a point in time on {source!r}: {exc}") from exc


def close_pit(client: Any, pit_id: str, source: str) -> None:
    try:
        client.delete_pit(body={"pit_id": [pit_id]})
    except OpenSearchException:
        log.warning("could not delete point in time on %s", source)


def read_pages(
    client: Any,
    pit_id: str,
    source: str,
    vector_field: str,
    size: int,
    after: list[Any] | None = None,
    part: tuple[int, int] | None = None,
) -> Iterator[tuple[list[dict], list]]:
    """Pages of `size` documents of the point in time `pit_id` on `source`, `vector_field`
    left out, in `_id` order after `after`: `(docs with their _id, the last sort value)`.

    `part` (id, max) reads one slice: OpenSearch assigns a document to a slice by a hash of its
    `_id`, so a slice holds the same documents on a fresh point in time after a restart."""
    try:
        while True:
            body: dict[str, Any] = {
                "size": size,
                "pit": {"id": pit_id, "keep_alive": PIT_KEEP_ALIVE},
                "sort": [{"_id": "asc"}],
                "_source": {"excludes": [vector_field]},
            }
            if part is not None:
                body["slice"] = {"id": part[0], "max": part[1]}
            if after is not None:
                body["search_after"] = after
            hits = client.search(body=body)["hits"]["hits"]
            if not hits:
                return
            after = hits[-1]["sort"]
            yield [{"_id": h["_id"], **h["_source"]} for h in hits], after
    except OpenSearchException as exc:
        raise ReindexError(f"reading {source!r} failed: {exc}") from exc


def create_documents(
    client: Any, index: str, docs: list[dict], vectors: Any, vector_field: str
) -> int:
    """Write `docs` with their `vectors` to `index` with `op_type=create`; return how many were
    there already (a dual write, or a page written before a crash), which are left as they are."""
    actions = (
        {
            "_op_type": "create",
            "_index": index,
            "_id": doc["_id"],
            "_source": {**{k: v for k, v in doc.items() if k != "_id"}, vector_field: vec.tolist()},
        }
        for doc, vec in zip(docs, vectors, strict=True)
    )
    existing = 0
    for ok, item in streaming_bulk(
        client, actions, chunk_size=len(docs) or 1, raise_on_error=False, max_retries=3
    ):
        status = item.get("create", {}).get("status")
        if not ok and status != 409:  # 409: already there (dual write or earlier run)
            raise DocumentIndexError(f"document refused by {index!r}: {item}")
        existing += not ok
    return existing

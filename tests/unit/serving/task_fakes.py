"""An in-memory stand-in for the few OpenSearch calls the task store and the lease make
(index with op_type/if_seq_no, get, delete, search with term/terms filters), with real
409 conflicts, so unit tests exercise the store's own concurrency logic."""

from __future__ import annotations

import copy
from typing import Any

from opensearchpy.exceptions import ConflictError, NotFoundError


class _Indices:
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.bodies: dict[str, Any] = {}

    def exists(self, index: str) -> bool:
        return index in self.names

    def create(self, index: str, body: Any = None, params: Any = None) -> None:
        self.names.add(index)
        self.bodies[index] = body

    def refresh(self, index: str) -> None:
        pass


class FakeOpenSearch:
    """Documents per index with sequence numbers; enough of the client for tasks and leases."""

    def __init__(self) -> None:
        self.indices = _Indices()
        self.docs: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self.seq = 0

    def index(self, index: str, id: str, body: dict, params: dict | None = None) -> dict:
        params = params or {}
        key = (index, id)
        if params.get("op_type") == "create" and key in self.docs:
            raise ConflictError(409, "version_conflict_engine_exception", {})
        if "if_seq_no" in params and (
            key not in self.docs or self.docs[key][1] != params["if_seq_no"]
        ):
            raise ConflictError(409, "version_conflict_engine_exception", {})
        self.seq += 1
        self.docs[key] = (copy.deepcopy(body), self.seq)
        return {"_seq_no": self.seq, "_primary_term": 1}

    def get(self, index: str, id: str) -> dict:
        if (index, id) not in self.docs:
            raise NotFoundError(404, "not_found", {})
        body, seq = self.docs[(index, id)]
        return {"_id": id, "_source": copy.deepcopy(body), "_seq_no": seq, "_primary_term": 1}

    def delete(self, index: str, id: str, params: dict | None = None) -> None:
        if (index, id) not in self.docs:
            raise NotFoundError(404, "not_found", {})
        del self.docs[(index, id)]

    def search(self, index: str, body: dict) -> dict:
        hits = [self.get(i, d) for (i, d) in self.docs if i == index]
        for clause in body["query"]["bool"]["filter"]:
            for kind, cond in clause.items():
                ((field, wanted),) = cond.items()
                allowed = wanted if kind == "terms" else [wanted]
                hits = [h for h in hits if h["_source"].get(field) in allowed]
        order = body["sort"][0]["created_at"]
        hits.sort(key=lambda h: (h["_source"]["created_at"], h["_id"]), reverse=order == "desc")
        return {"hits": {"hits": hits[body["from"] : body["from"] + body["size"]]}}

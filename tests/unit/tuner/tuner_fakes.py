"""Small builders for tuner tests: sessions, model directories, a document source."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.sessions import Action, Session


def session(
    query: str, hits: Sequence[str], *actions: tuple[str, str], query_id: str = "q"
) -> Session:
    """A session whose actions are (object_id, action_name), ordinals taken from `hits`."""
    return Session(
        query_id=query_id,
        user_query=query,
        hit_ids=tuple(hits),
        actions=tuple(
            Action(obj, name, hits.index(obj) if obj in hits else None) for obj, name in actions
        ),
    )


def actions_of(events: Sequence[Mapping[str, Any]]) -> tuple[Action, ...]:
    """The actions of simulated UBI event records (`tuner.simulator`), with their ordinals."""
    return tuple(
        Action(
            e["event_attributes"]["object"]["object_id"],
            e["action_name"],
            e["event_attributes"]["position"]["ordinal"],
        )
        for e in events
    )


def write_model_dir(path: Path, version: str = "x", dimension: int = 4) -> Path:
    """A model directory that satisfies the registry (the ONNX bytes are not a real graph)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.onnx").write_bytes(b"not a real graph")
    (path / "tokenizer.json").write_text("{}")
    meta = {
        "format": 1,
        "kind": "text",
        "version": version,
        "dimension": dimension,
        "max_length": 16,
        "base_model": "fake-base",
        "parent": None,
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {},
        "parity_min_cosine": 1.0,
    }
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


class FakeDocuments:
    """`DocumentSource` over a dict: id -> fields."""

    def __init__(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        self.docs = dict(docs)
        self.asked: list[str] = []

    def get_documents(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        self.asked.extend(ids)
        return {i: self.docs[i] for i in ids if i in self.docs}

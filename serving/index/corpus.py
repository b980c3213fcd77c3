"""Documents to index: read a corpus JSONL file (BEIR layout) and build the text to embed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving.errors import CorpusError

__all__ = ["corpus_file", "document_text", "read_corpus"]


def corpus_file(path: Path) -> Path:
    """The JSONL file behind `path`: `path/corpus.jsonl` for a dataset dir, else `path` itself."""
    path = Path(path)
    file = path / "corpus.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise CorpusError(f"{path} is neither a JSONL file nor a dataset dir with corpus.jsonl")
    return file


def read_corpus(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the documents of a dataset dir or JSONL file: each needs `_id`; fields are kept."""
    file = corpus_file(path)
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _document(line, f"{file}:{number}")


def _document(line: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict):
        raise CorpusError(f"{where}: a document must be a JSON object, got {type(doc).__name__}")
    doc_id = doc.get("_id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc["_id"] = doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise CorpusError(f"{where}: '_id' must be a non-empty string, got {doc_id!r}")
    for field in ("title", "text"):
        if field in doc and doc[field] is not None and not isinstance(doc[field], str):
            raise CorpusError(f"{where}: {field!r} must be a string, got {doc[field]!r}")
    return doc


def document_text(doc: dict[str, Any], fields: list[str]) -> str:
    """The text to embed: the non-empty `fields` of `doc`, stripped, joined with one space."""
    parts = (doc.get(field) for field in fields)
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())

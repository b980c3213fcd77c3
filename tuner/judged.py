"""Judged collections: queries, graded relevance judgments and a train/test split.

The on-disk format is the one of ../shared/data: `corpus.jsonl` (`_id`, `title`, `text`),
`queries.jsonl` (`_id`, `text`), `qrels.tsv` (header `query-id corpus-id score`) and
`split.json` (`{"train": [...], "test": [...]}`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving.index.corpus import read_corpus

REQUIRED_FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv", "split.json")


class DatasetError(ValueError):
    """A judged collection is missing a file or holds a malformed line (named in the message)."""


@dataclass(frozen=True)
class JudgedCollection:
    """A judged collection loaded from a directory; the corpus is streamed on demand."""

    root: Path
    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: dict[str, list[str]]

    def corpus(self) -> Iterator[dict]:
        """Stream the documents of `corpus.jsonl`."""
        return read_corpus(self.root / "corpus.jsonl")

    def split_queries(self, split: str) -> dict[str, str]:
        """The queries of one split (`train` or `test`) that have at least one judgment > 0."""
        if split not in self.split:
            raise DatasetError(
                f"split {split!r} is not in {self.root / 'split.json'}: it has {sorted(self.split)}"
            )
        return {
            qid: self.queries[qid]
            for qid in self.split[split]
            if qid in self.queries and any(g > 0 for g in self.qrels.get(qid, {}).values())
        }


def load_collection(root: Path | str) -> JudgedCollection:
    """Load a judged collection directory, checking every file it needs."""
    root = Path(root)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise DatasetError(f"{root} is not a judged collection: missing {', '.join(missing)}")
    return JudgedCollection(
        root=root,
        name=root.resolve().name,
        queries=_read_queries(root / "queries.jsonl"),
        qrels=_read_qrels(root / "qrels.tsv"),
        split=_read_split(root / "split.json"),
    )


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(
                    f"{path}:{number}: a query needs `_id` and `text` ({exc})"
                ) from exc
    return queries


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise DatasetError(
                f"{path}: the header must be 'query-id<TAB>corpus-id<TAB>score', got {header!r}"
            )
        for number, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except (IndexError, ValueError) as exc:
                raise DatasetError(
                    f"{path}:{number}: expected query-id, corpus-id and an "
                    f"integer score, got {row!r}"
                ) from exc
    return qrels


def _read_split(path: Path) -> dict[str, list[str]]:
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(split, dict) or not all(isinstance(v, list) for v in split.values()):
        raise DatasetError(f"{path} must map split names to lists of query ids")
    return {name: [str(q) for q in ids] for name, ids in split.items()}

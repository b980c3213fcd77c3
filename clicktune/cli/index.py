"""`clicktune index` and `clicktune reindex`: the document index behind the alias."""

from __future__ import annotations

from clicktune.cli.common import planned


def index() -> None:
    """Embed a corpus (DATASET_DIR or JSONL) and index it behind the alias."""
    planned("index", 3)


def reindex() -> None:
    """Re-embed the live index with another model version and swap the alias atomically."""
    planned("reindex", 7)

"""Errors raised by the serving package.

    ServingError
     ├── RegistryError          unknown version or alias, bad model directory, version exists
     ├── ModelLoadError         a model directory that cannot be served (files, graph, metadata)
     ├── CorpusError            a corpus file or line that is not a valid document
     ├── DocumentIndexError     OpenSearch refused or could not be reached
     │    ├── BulkIndexError    some documents of a bulk write failed (`.errors` holds them)
     │    └── ReindexError      a reindex cannot start, resume or finish (`ReindexPendingError`)
     ├── ExperimentError        an A/B experiment cannot start, be read or be stopped
     ├── QueryLogError          the UBI query record could not be published
     ├── SwapRefusedError       a model failed its hot-swap checks; the old one keeps serving
     └── MlCommonsError         OpenSearch ml-commons refused a connector, model or pipeline

Errors of the libraries below (onnxruntime, opensearch-py, kafka-python) are mapped to these at
the boundary with `raise ... from exc`; every message names the bad value and the rule.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BulkIndexError",
    "CorpusError",
    "DocumentIndexError",
    "ExperimentError",
    "ModelLoadError",
    "QueryLogError",
    "ReindexError",
    "ReindexPendingError",
    "RegistryError",
    "MlCommonsError",
    "ServingError",
    "SwapRefusedError",
]


class ServingError(Exception):
    """Base of every error the serving package raises on purpose."""


class RegistryError(ServingError):
    """The model registry cannot do what was asked (unknown ref, existing version, bad dir)."""


class ModelLoadError(ServingError):
    """A model directory cannot be loaded into an encoder."""


class CorpusError(ServingError):
    """A corpus file or one of its lines is not a valid document."""


class DocumentIndexError(ServingError):
    """An operation on the document index failed in OpenSearch."""


class BulkIndexError(DocumentIndexError):
    """Some documents of a bulk write were refused; `errors` holds OpenSearch's item errors."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class ReindexError(DocumentIndexError):
    """A reindex cannot start, resume or finish; the alias stays where it was."""


class ReindexPendingError(ReindexError):
    """An unfinished reindex exists: resume it (`--resume`) or abandon it first."""


class ExperimentError(ServingError):
    """An A/B experiment cannot be started, read or stopped as asked."""


class QueryLogError(ServingError):
    """A UBI query record could not be published (the caller may retry later)."""


class SwapRefusedError(ServingError):
    """A new model version failed to load or its probe checks; the slot keeps the old one."""


class MlCommonsError(ServingError):
    """OpenSearch's ml-commons plugin refused or did not finish a connector/model/pipeline step."""

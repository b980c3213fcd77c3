"""Errors raised by the serving package.

    ServingError
     ├── RegistryError          unknown version or alias, bad model directory, version exists
     │    ├── UnknownModelError          no version or alias of that name (`.ref`)
     │    ├── RegistryUnavailableError   the MLflow tracking server did not answer (after retries)
     │    ├── MlflowApiError             MLflow answered with an error (`.code`: its error_code)
     │    └── ChecksumError              a cached or downloaded model file is not what was uploaded
     ├── ModelLoadError         a model directory that cannot be served (files, graph, metadata)
     ├── CorpusError            a corpus file or line that is not a valid document
     │    └── ImageError        a document's image cannot be used (`.problem`: source, fetch,
     │                          too large, not decodable); its text is safe to show a client
     ├── DocumentIndexError     OpenSearch refused or could not be reached
     │    ├── BulkIndexError    some documents of a bulk write failed (`.errors` holds them)
     │    └── ReindexError      a reindex cannot start, resume or finish (`ReindexPendingError`)
     │         └── RayClusterError   the Ray cluster cannot be reached or cannot start the actors
     ├── ExperimentError        an A/B experiment cannot start, be read or be stopped
     ├── StateError             clicktune's own records in OpenSearch cannot be read or written
     │    └── StateConflictError     the record changed, appeared or vanished since it was read
     ├── QueryLogError          the UBI query record could not be published
     ├── SwapRefusedError       a model failed its hot-swap checks; the old one keeps serving
     ├── ReindexRequiredError   promoting a version needs a reindex the caller did not allow
 ├── PairingError           a query model would search an index its document model did not build
     └── MlCommonsError         OpenSearch ml-commons refused a connector, model or pipeline

Errors of the libraries below (onnxruntime, opensearch-py, kafka-python) are mapped to these at
the boundary with `raise ... from exc`; every message names the bad value and the rule.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "BulkIndexError",
    "ChecksumError",
    "CorpusError",
    "DocumentIndexError",
    "ExperimentError",
    "ImageError",
    "ImageProblem",
    "ModelLoadError",
    "PairingError",
    "QueryLogError",
    "RayClusterError",
    "ReindexError",
    "ReindexPendingError",
    "ReindexRequiredError",
    "RegistryError",
    "MlCommonsError",
    "MlflowApiError",
    "RegistryUnavailableError",
    "UnknownModelError",
    "ServingError",
    "StateConflictError",
    "StateError",
    "SwapRefusedError",
]


class ServingError(Exception):
    """Base of every error the serving package raises on purpose."""


class RegistryError(ServingError):
    """The model registry cannot do what was asked (unknown ref, existing version, bad dir)."""


class UnknownModelError(RegistryError):
    """No model version or alias is named `ref`; the message lists those that exist."""

    def __init__(self, message: str, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class RegistryUnavailableError(RegistryError):
    """The MLflow tracking server could not be reached; the message names its URL and the call."""


class MlflowApiError(RegistryError):
    """The MLflow tracking server refused a call; `code` is its error_code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ChecksumError(RegistryError):
    """A model file's sha256 differs from the one recorded when it was registered."""


class ModelLoadError(ServingError):
    """A model directory cannot be loaded into an encoder."""


class CorpusError(ServingError):
    """A corpus file or one of its lines is not a valid document."""


class ImageProblem(StrEnum):
    """Why an image was refused; the client sees only this, never the cause."""

    SOURCE = "could not be used: not an allowed source"
    FETCH = "could not be fetched"
    TOO_LARGE = "is larger than serving.index.images.max_bytes"
    TOO_MANY_PIXELS = "has more pixels than serving.index.images.max_pixels"
    UNDECODABLE = "is not a decodable image within the limits"


class ImageError(CorpusError):
    """A document's image cannot be used. `str()` is generic (no addresses, no socket errors:
    no port-scan oracle); `detail` holds the cause for the server log."""

    def __init__(
        self, problem: ImageProblem, detail: str, *, limit: int | None = None, label: str = "image"
    ) -> None:
        self.problem, self.detail, self.limit, self.label = problem, detail, limit, label
        suffix = f"={limit}" if limit is not None else ""
        super().__init__(f"{label} {problem.value}{suffix}")

    def about(self, label: str) -> ImageError:
        """The same error, its message naming `label` (e.g. "image of document 'a'")."""
        return ImageError(self.problem, self.detail, limit=self.limit, label=label)


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


class RayClusterError(ReindexError):
    """`--engine ray` cannot reach its Ray cluster or start its actors there; nothing was written
    by the attempt."""


class ExperimentError(ServingError):
    """An A/B experiment cannot be started, read or stopped as asked."""


class StateError(ServingError):
    """A record clicktune keeps in OpenSearch (experiment, reindex checkpoint) cannot be read or
    written; the message names the index, the cluster and the setting that put it there."""


class StateConflictError(StateError):
    """The record changed, appeared or vanished since it was read; read it again."""


class QueryLogError(ServingError):
    """A UBI query record could not be published (the caller may retry later)."""


class SwapRefusedError(ServingError):
    """A new model version failed to load or its probe checks; the slot keeps the old one."""


class ReindexRequiredError(ServingError):
    """No kept index of the version holds the live documents and the caller did not allow a
    reindex; nothing moved."""


class PairingError(ServingError):
    """A query model was asked to serve over an index another document model built; nothing
    moved."""


class MlCommonsError(ServingError):
    """OpenSearch's ml-commons plugin refused or did not finish a connector/model/pipeline step."""

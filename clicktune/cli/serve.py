"""`clicktune serve`: the embedding and search HTTP service."""

from __future__ import annotations

from clicktune.cli.common import planned


def serve() -> None:
    """Serve /v1/embeddings, /embed and /v1/search on the live model."""
    planned("serve", 3)

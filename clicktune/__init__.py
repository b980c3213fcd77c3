"""clicktune: vector search for OpenSearch that fine-tunes its embedding model from clicks.

This package is the thin composition layer: the `clicktune` command, typed configuration,
client factories and local services. The work itself lives in `ingest`, `tuner` and `serving`.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

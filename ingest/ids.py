"""Deterministic record ids: the same content always gets the same id, so redelivery overwrites."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["ID_HEX_CHARS", "canonical_json", "content_id"]

ID_HEX_CHARS = 32


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_id(data: Any) -> str:
    """The first 32 hex digits of sha256 over the canonical JSON of `data`."""
    digest = hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
    return digest[:ID_HEX_CHARS]

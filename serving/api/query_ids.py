"""Query ids signed with HMAC-SHA256, so events for queries this service never answered show.

With `auth.query_signing_key` set, `/v1/search` issues `<uuid4>.<signature>` ids; the collector
checks the signature of each record's `query_id` and marks the record
(`event_attributes.query_id_verified` / `query_attributes.query_id_verified`) instead of
dropping it: a forged session stays visible for analysis and can be filtered out of training.
Without a key, ids are plain uuid4s and nothing is marked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

__all__ = ["QueryIdSigner"]

SIGNATURE_CHARS = 22  # 132 bits of the base64url HMAC-SHA256


class QueryIdSigner:
    """Issues and verifies signed query ids under one secret key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the query signing key is empty: set a non-empty secret")
        self._key = key

    def issue(self) -> str:
        """A fresh query id: a uuid4, a dot, its signature."""
        plain = str(uuid.uuid4())
        return f"{plain}.{self._signature(plain)}"

    def verify(self, query_id: object) -> bool:
        """True if `query_id` is a string this key signed."""
        if not isinstance(query_id, str):
            return False
        plain, dot, signature = query_id.rpartition(".")
        if not dot or not plain:
            return False
        return hmac.compare_digest(signature.encode(), self._signature(plain).encode())

    def _signature(self, plain: str) -> str:
        digest = hmac.new(self._key, plain.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii")[:SIGNATURE_CHARS]

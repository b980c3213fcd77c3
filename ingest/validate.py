"""Bytes from Kafka -> a record to store, or a `Rejection` naming the field and the rule.

Validation never raises on bad input: whatever arrives, the caller gets a record to store or a
reason to put on the dead-letter topic. The pydantic models of `ingest.schema` define what is
valid (`validate_with_models`); `validate_record` gets the same outcome, but checks the common,
well-formed record by hand first (`ingest.fastpath`, ~10x cheaper) and leaves every other record,
and so every rejection reason, to the models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from ingest.fastpath import Accepted, accept_event, accept_query
from ingest.ids import canonical_json
from ingest.schema import (
    UbiEvent,
    UbiQuery,
    event_source,
    parse_timestamp,
    query_source,
    unwrap_query,
)

__all__ = [
    "RecordKind",
    "Rejection",
    "UbiRecord",
    "ValidRecord",
    "describe_errors",
    "validate_record",
    "validate_with_models",
]

UbiRecord = UbiQuery | UbiEvent
MAX_REASONS = 3
LONG_NUMBER_DIGITS = 19  # orjson reads integers beyond 64 bits (19+ digits) as floats
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)


class RecordKind(StrEnum):
    QUERY = "query"
    EVENT = "event"


@dataclass(frozen=True)
class Rejection:
    """Why a record was refused, e.g. 'event_attributes.position.ordinal: -1 is below 0'."""

    reason: str


@dataclass(slots=True)
class ValidRecord:
    """A record to store: `record_id` is its OpenSearch `_id`, `source` its document (read-only)."""

    record_id: str
    source: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return self.source


_MODELS: dict[RecordKind, type[UbiQuery] | type[UbiEvent]] = {
    RecordKind.QUERY: UbiQuery,
    RecordKind.EVENT: UbiEvent,
}
_FAST: dict[RecordKind, Callable[[dict[str, Any], str | None], Accepted | None]] = {
    RecordKind.QUERY: accept_query,
    RecordKind.EVENT: accept_event,
}


def validate_record(
    raw: bytes | None, kind: RecordKind, max_record_bytes: int, received_ms: int | None = None
) -> ValidRecord | Rejection:
    """Parse and check one Kafka record value of `kind`; `received_ms` (epoch milliseconds, the
    Kafka record's timestamp) stamps a query that came without a timestamp."""
    data = _json_object(raw, max_record_bytes, kind)
    if isinstance(data, Rejection):
        return data
    accepted = _FAST[kind](data, _received(received_ms))
    if accepted is not None:
        return ValidRecord(*accepted)
    return validate_with_models(data, kind, received_ms=received_ms)


def validate_with_models(
    data: bytes | None | dict[str, Any],
    kind: RecordKind,
    max_record_bytes: int = 0,
    received_ms: int | None = None,
) -> ValidRecord | Rejection:
    """The reference: the same checks as `validate_record`, every record through the models
    (`data` raw bytes, checked against `max_record_bytes`, or an already parsed object)."""
    parsed = data if isinstance(data, dict) else _json_object(data, max_record_bytes, kind)
    if isinstance(parsed, Rejection):
        return parsed
    record = _model_record(parsed, kind)
    if isinstance(record, Rejection):
        return record
    if isinstance(record, UbiQuery):
        return ValidRecord(*query_source(record.content(), _received(received_ms)))
    return ValidRecord(*event_source(record.content()))


def _received(received_ms: int | None) -> str | None:
    """The receive time as a stored timestamp; None when unknown or implausible."""
    try:
        return parse_timestamp(received_ms) if received_ms is not None else None
    except ValueError:
        return None


def _json_object(
    raw: bytes | None, max_record_bytes: int, kind: RecordKind
) -> dict[str, Any] | Rejection:
    if raw is None or len(raw) == 0:
        return Rejection("empty record (no value)")
    if len(raw) > max_record_bytes:
        return Rejection(f"record of {len(raw)} bytes is over max_record_bytes={max_record_bytes}")
    data = _parse_json(raw)
    if isinstance(data, Rejection):
        return data
    if not isinstance(data, dict):
        return Rejection(f"not a JSON object: got a JSON {type(data).__name__}")
    return unwrap_query(data) if kind is RecordKind.QUERY else data


def _model_record(data: dict[str, Any], kind: RecordKind) -> UbiRecord | Rejection:
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        return Rejection(describe_errors(exc))


def _parse_json(raw: bytes) -> Any:
    """orjson when it surely agrees with the stdlib (most records), else the stdlib's parse."""
    # A run of 19 digits, found by mapping every digit to "0" (~20x cheaper than a regex).
    if b"0" * LONG_NUMBER_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)  # refuses NaN, Infinity, lone surrogates, bad UTF-8
        except orjson.JSONDecodeError:
            pass  # parsed again below, for the stdlib's wording of the reason
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
        # Lone surrogates ("\ud800") parse but cannot be sent to OpenSearch as UTF-8; they can
        # only come from \u escapes, so most records skip the (costly) re-encoding check.
        if b"\\u" in raw:
            canonical_json(data).encode("utf-8")
    except UnicodeError as exc:
        return Rejection(f"not UTF-8 text: {exc}")
    except RecursionError:
        return Rejection("not JSON: nested too deeply")
    except ValueError as exc:
        return Rejection(f"not JSON: {exc}")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the float range")
    return value


def describe_errors(exc: ValidationError) -> str:
    """The first few pydantic errors as 'field.path: value rule' phrases joined by '; '."""
    errors = exc.errors(include_url=False)
    phrases = [_describe(error) for error in errors[:MAX_REASONS]]
    if len(errors) > MAX_REASONS:
        phrases.append(f"and {len(errors) - MAX_REASONS} more")
    return "; ".join(phrases)


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "record"
    value, kind, ctx = error.get("input"), error["type"], error.get("ctx") or {}
    shown = _short(value)
    if kind == "missing":
        return f"{field}: is required but missing"
    if kind == "greater_than_equal":
        return f"{field}: {shown} is below {ctx['ge']}"
    if kind == "less_than_equal":
        return f"{field}: {shown} is above {ctx['le']}"
    if kind == "value_error":
        return f"{field}: {ctx.get('error', error['msg'])}"
    return f"{field}: {shown} is invalid ({error['msg'].lower()})"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

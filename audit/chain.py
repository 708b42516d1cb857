"""The hash chain: the canonical encoding of an event and the hash that links it.

Events written since migration 0004 (``body_digest`` set) hash as *header + body digest*::

    body_digest = SHA-256 (HMAC-SHA256 when keyed) of the canonical JSON of
                  {"event_id":..., prompt, output, findings, metadata, error, timings_ms}
    hash        = SHA-256 (HMAC-SHA256 when keyed) of
                  {"body":"<body_digest>","chain":{...},"header":{...every other field...},"v":2}

(canonical JSON here is orjson's: sorted keys, compact, UTF-8 without ASCII escaping, of
the normalised values described below), so a retention purge can drop the body (the
purgeable `BODY_FIELDS`) and keep the ``body_digest``: every header field of a purged row
stays verifiable. The event id salts the body digest, and a keyed store keys it, so the
digest of a purged body does not give away short prompts to a dictionary.

Rows written before 0004 (``body_digest`` NULL) keep the original encoding: their hash is
SHA-256 (HMAC-SHA256 when a key is given) over the UTF-8 bytes of::

    {"chain":{"chain_id":...,"prev_hash":...,"seq":...},"event":{...content fields...}}

canonical JSON: sorted keys, compact separators, ``ensure_ascii=False``, the timestamp as
UTC ISO-8601 with microseconds. The encoding must come out identical after a round trip
through SQLite JSON and PostgreSQL JSONB, so numbers are normalised first: JSONB turns
``1e20`` into the integer ``100000000000000000000`` and ``1.0`` into ``1.0`` or ``1``, so
integral floats and integers hash alike, and integers beyond 2**53 hash as the nearest
float (a change below that precision in a huge integer is not detected).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from audit.event import AuditEvent
from audit.exceptions import AuditEventError

__all__ = [
    "BODY_FIELDS",
    "CONTENT_FIELDS",
    "HEADER_FIELDS",
    "EncodedEvent",
    "body_digest_from_mapping",
    "chain_hash",
    "chain_hash_v2",
    "content_json",
    "content_json_from_mapping",
    "encode_event",
    "header_json_from_mapping",
]

CONTENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "created_at",
    "request_id",
    "tenant",
    "user",
    "model",
    "prompt",
    "output",
    "text_storage",
    "input_action",
    "output_action",
    "action",
    "findings",
    "flagged",
    "latency_ms",
    "timings_ms",
    "error",
    "streamed",
    "released_chars",
    "policy_name",
    "policy_version",
    "policy_digest",
    "metadata",
    "phase",
    "stream_end",
)
"""Every `AuditEvent` field; all of them are covered by the hash (a test pins this)."""

_OMITTED_DEFAULTS: dict[str, Any] = {"phase": "call", "stream_end": None}
"""Fields added after chains were first written: left out of the encoding while they hold
their default, so rows written before they existed hash (and verify) unchanged. The
encoding stays injective: a key is absent exactly when the field holds its default."""

BODY_FIELDS: tuple[str, ...] = ("prompt", "output", "findings", "metadata", "error", "timings_ms")
"""What a retention purge removes; covered by the body digest."""

HEADER_FIELDS: tuple[str, ...] = tuple(f for f in CONTENT_FIELDS if f not in BODY_FIELDS)
"""Everything else, hashed directly, so it stays verifiable after a purge."""

_EXACT_INT_LIMIT = 2**53


class _NotJSONError(Exception):
    """A value that cannot be recorded; ``path`` is filled in on the way out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


_NUL = "NUL character in text (PostgreSQL cannot store it)"


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_EXACT_INT_LIMIT <= value <= _EXACT_INT_LIMIT else float(value)
    if not math.isfinite(value):
        raise _NotJSONError(f"{value!r} is not a JSON number")
    if value.is_integer() and abs(value) <= _EXACT_INT_LIMIT:
        return int(value)
    return value


def _norm(value: Any) -> Any:
    # Exact-type checks first (the hot path: this runs on every field of every event).
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise _NotJSONError(_NUL)
        return value
    if value is None or kind is bool:
        return value
    if kind is int or kind is float:
        return _number(value)
    if kind is dict or isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSONError(f"key {key!r} is not a string")
            if "\x00" in key:
                raise _NotJSONError(_NUL)
            try:
                out[key] = _norm(item)
            except _NotJSONError as bad:
                bad.path.append(f".{key}")
                raise
        return out
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        items: list[Any] = []
        for i, item in enumerate(value):
            try:
                items.append(_norm(item))
            except _NotJSONError as bad:
                bad.path.append(f"[{i}]")
                raise
        return items
    if isinstance(value, str):
        if "\x00" in value:
            raise _NotJSONError(_NUL)
        return value
    if isinstance(value, int | float):
        return _number(value)
    raise _NotJSONError(f"{type(value).__name__} value {value!r} is not JSON data")


def _normalise(value: Any, where: str) -> Any:
    """Return ``value`` as JSON-ready data whose encoding survives SQLite and JSONB.

    Raises:
        AuditEventError: naming the field path (``where`` and below) and the problem.
    """
    try:
        return _norm(value)
    except _NotJSONError as bad:
        path = "".join(reversed(bad.path))
        raise AuditEventError(f"{where}{path}: {bad.message}") from None


def _timestamp(value: Any) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise AuditEventError(f"created_at: {value!r} is not a timezone-aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_json_from_mapping(fields: Mapping[str, Any]) -> str:
    """The canonical JSON of an event's content, from a mapping of `CONTENT_FIELDS`.

    Raises:
        AuditEventError: a value is not JSON data, the timestamp is naive, or text holds NUL.
    """
    doc = {
        name: _normalise(fields[name], name)
        for name in CONTENT_FIELDS
        if name != "created_at"
        and not (name in _OMITTED_DEFAULTS and fields[name] == _OMITTED_DEFAULTS[name])
    }
    doc["created_at"] = _timestamp(fields["created_at"])
    encoded = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        encoded.encode()
    except UnicodeEncodeError as exc:
        raise AuditEventError(f"text is not encodable as UTF-8: {exc}") from exc
    return encoded


def content_json(event: AuditEvent) -> str:
    """The canonical JSON of ``event``'s content (see `content_json_from_mapping`)."""
    return content_json_from_mapping({name: getattr(event, name) for name in CONTENT_FIELDS})


def chain_hash(
    content: str, *, chain_id: str, seq: int, prev_hash: str, hmac_key: bytes | None
) -> str:
    """The hex hash of one chained event, given its canonical content JSON."""
    chain = json.dumps(
        {"chain_id": chain_id, "prev_hash": prev_hash, "seq": seq},
        sort_keys=True,
        separators=(",", ":"),
    )
    data = f'{{"chain":{chain},"event":{content}}}'.encode()
    if hmac_key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(hmac_key, data, hashlib.sha256).hexdigest()


def _digest(data: bytes, hmac_key: bytes | None) -> str:
    if hmac_key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(hmac_key, data, hashlib.sha256).hexdigest()


def _canonical(doc: dict[str, Any]) -> str:
    """Sorted-key compact JSON (orjson: UTF-8, no ASCII escaping) of normalised data."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:
        raise AuditEventError(f"text is not encodable as UTF-8: {exc}") from exc


def header_json_from_mapping(fields: Mapping[str, Any]) -> str:
    """The canonical JSON of an event's `HEADER_FIELDS` (same rules as the content JSON).

    Raises:
        AuditEventError: a value is not JSON data, the timestamp is naive, or text holds NUL.
    """
    doc = {
        name: _normalise(fields[name], name)
        for name in HEADER_FIELDS
        if name != "created_at"
        and not (name in _OMITTED_DEFAULTS and fields[name] == _OMITTED_DEFAULTS[name])
    }
    doc["created_at"] = _timestamp(fields["created_at"])
    return _canonical(doc)


def body_digest_from_mapping(fields: Mapping[str, Any], hmac_key: bytes | None) -> str:
    """The hex digest of an event's body (`BODY_FIELDS`, salted with its event id).

    Raises:
        AuditEventError: a value is not JSON data, or text holds NUL or is not UTF-8.
    """
    doc = {name: _normalise(fields[name], name) for name in BODY_FIELDS}
    doc["event_id"] = _normalise(fields["event_id"], "event_id")
    return _digest(_canonical(doc).encode(), hmac_key)


def chain_hash_v2(
    header: str,
    body_digest: str,
    *,
    chain_id: str,
    seq: int,
    prev_hash: str,
    hmac_key: bytes | None,
) -> str:
    """The hex hash of one chained event in the header + body-digest encoding."""
    chain = _canonical({"chain_id": chain_id, "prev_hash": prev_hash, "seq": seq})
    data = f'{{"body":"{body_digest}","chain":{chain},"header":{header},"v":2}}'
    return _digest(data.encode(), hmac_key)


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event's canonical header JSON and body digest, computed once (at submit)."""

    header: str
    body_digest: str


def encode_event(event: AuditEvent, hmac_key: bytes | None) -> EncodedEvent:
    """Encode ``event`` for `chain_hash_v2`.

    Raises:
        AuditEventError: the event cannot be encoded (see `header_json_from_mapping`).
    """
    fields = {name: getattr(event, name) for name in CONTENT_FIELDS}
    return EncodedEvent(
        header_json_from_mapping(fields), body_digest_from_mapping(fields, hmac_key)
    )

"""The hash chain: the canonical encoding of an event and the hash that links it.

An event's hash is SHA-256 (HMAC-SHA256 when a key is given) over the UTF-8 bytes of::

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
from datetime import UTC, datetime
from typing import Any

from audit.event import AuditEvent
from audit.exceptions import AuditEventError

__all__ = ["CONTENT_FIELDS", "chain_hash", "content_json", "content_json_from_mapping"]

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

_EXACT_INT_LIMIT = 2**53


def _normalise(value: Any, where: str) -> Any:
    """Return ``value`` as JSON-ready data whose encoding survives SQLite and JSONB."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise AuditEventError(f"{where}: NUL character in text (PostgreSQL cannot store it)")
        return value
    if isinstance(value, int):
        return value if abs(value) <= _EXACT_INT_LIMIT else float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditEventError(f"{where}: {value!r} is not a JSON number")
        if value.is_integer() and abs(value) <= _EXACT_INT_LIMIT:
            return int(value)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditEventError(f"{where}: key {key!r} is not a string")
            out[_normalise(key, where)] = _normalise(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise AuditEventError(f"{where}: {type(value).__name__} value {value!r} is not JSON data")


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

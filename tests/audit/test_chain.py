"""The canonical encoding: stable across backends, strict about what it accepts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit import AuditEvent
from audit.chain import chain_hash, content_json
from audit.exceptions import AuditEventError


def _event(**overrides) -> AuditEvent:
    base = {
        "request_id": "r",
        "policy_name": "p",
        "policy_version": "1",
        "policy_digest": "d",
        "action": "allow",
        "event_id": "e" * 32,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    }
    base.update(overrides)
    return AuditEvent(**base)


def test_encoding_is_sorted_compact_and_utc():
    """Keys are sorted, separators compact, text unescaped, time UTC with microseconds."""
    local = datetime(2026, 1, 2, 5, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    encoded = content_json(_event(created_at=local, prompt="é"))
    doc = json.loads(encoded)
    assert list(doc) == sorted(doc)
    assert doc["created_at"] == "2026-01-02T03:04:05.000006Z"
    assert '"prompt":"é"' in encoded


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1.0, 1),  # JSONB may hand back 1.0 or 1
        (1e20, 100000000000000000000),  # JSONB hands back a big float as an integer
        (1.5e300, int("15" + "0" * 299)),
        (-0.0, 0),
    ],
)
def test_numbers_that_jsonb_rewrites_hash_alike(before, after):
    """Numbers JSONB normalises encode the same before and after the round trip."""
    assert content_json(_event(metadata={"x": before})) == content_json(
        _event(metadata={"x": after})
    )


def test_different_numbers_hash_differently():
    """A changed number changes the encoding (normalisation does not hide edits)."""
    assert content_json(_event(latency_ms=1.25)) != content_json(_event(latency_ms=1.5))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metadata": {"x": float("nan")}}, "metadata.x: nan"),
        ({"metadata": {1: "a"}}, "key 1 is not a string"),
        ({"metadata": {"x": object()}}, "is not JSON data"),
        ({"prompt": "a\x00b"}, "NUL"),
        ({"created_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"output": "\ud800"}, "UTF-8"),
    ],
)
def test_unencodable_events_are_refused(overrides, message):
    """Values that would not survive the store are refused up front, naming the field."""
    with pytest.raises(AuditEventError, match=message):
        content_json(_event(**overrides))


def test_hmac_changes_the_hash():
    """The keyed hash differs from plain SHA-256 and between keys."""
    content = content_json(_event())
    kwargs = {"chain_id": "c", "seq": 1, "prev_hash": "0" * 64}
    plain = chain_hash(content, hmac_key=None, **kwargs)
    keyed = chain_hash(content, hmac_key=b"k1", **kwargs)
    assert len({plain, keyed, chain_hash(content, hmac_key=b"k2", **kwargs)}) == 3

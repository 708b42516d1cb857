"""Shared audit fixtures: migrated stores on SQLite and PostgreSQL, and test events.

The throwaway PostgreSQL database itself comes from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from audit import AuditEvent, AuditStore, upgrade

POLICY_DIGEST = "sha256:" + "ab" * 32
EventFactory = Callable[..., AuditEvent]


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite file in tmp_path, migrated to head."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty store URL: once on SQLite, once on the real PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def make_event() -> EventFactory:
    """A factory of valid events that reference the recorded test policy."""

    def factory(**overrides: Any) -> AuditEvent:
        fields: dict[str, Any] = {
            "request_id": "req-1",
            "policy_name": "default",
            "policy_version": "1.0",
            "policy_digest": POLICY_DIGEST,
            "action": "allow",
            "tenant": "acme",
            "user": "alice",
            "model": "moe-small",
            "prompt": "Hello, wörld",
            "output": "Hi ☃",
            "input_action": "allow",
            "output_action": "allow",
            "findings": ({"rule_id": "pii.email", "score": 0.93, "spans": [[0, 4]]},),
            "latency_ms": 12.5,
            "timings_ms": {"input_rules": 0.125, "generate": 11.0},
            "metadata": {"client": "test", "n": 1, "nested": {"ok": True, "none": None}},
        }
        fields.update(overrides)
        return AuditEvent(**fields)

    return factory


@pytest.fixture
def store(backend_url: str) -> Iterator[AuditStore]:
    """An open store on each backend, with the test policy recorded."""
    audit_store = AuditStore(backend_url)
    audit_store.record_policy(POLICY_DIGEST, "default", "1.0", "rules: []\n")
    try:
        yield audit_store
    finally:
        audit_store.close()


@pytest.fixture
def policy_digest() -> str:
    """The digest of the policy the `store` fixture records and `make_event` references."""
    return POLICY_DIGEST

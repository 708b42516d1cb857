"""Shared audit fixtures: migrated stores on SQLite and PostgreSQL, and test events.

The throwaway PostgreSQL database itself comes from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

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


@pytest.fixture
def pg_proxy(pg_url: str, tcp_proxy_cls: Any) -> Iterator[tuple[Any, str]]:
    """A started `TcpProxy` in front of the test PostgreSQL, and the URL through it."""
    target = urlsplit(pg_url.replace("postgresql+psycopg", "postgresql"))
    proxy = tcp_proxy_cls(target.port or 5432)
    proxy.target_url = pg_url
    proxy.start()
    try:
        yield proxy, f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}{target.path}"
    finally:
        if proxy.running:
            proxy.stop()


def _rehash(
    fields: dict[str, Any], *, chain_id: str, seq: int, prev_hash: str, hmac_key: bytes | None
) -> tuple[str, str]:
    """What an attacker who knows the key (or there is none) recomputes for a forged row:
    its (body_digest, hash) in the header + body-digest encoding."""
    from audit.chain import (
        BODY_FIELDS,
        HEADER_FIELDS,
        body_digest_from_mapping,
        chain_hash_v2,
        header_json_from_mapping,
    )

    body = body_digest_from_mapping({k: fields[k] for k in (*BODY_FIELDS, "event_id")}, hmac_key)
    header = header_json_from_mapping({k: fields[k] for k in HEADER_FIELDS})
    digest = chain_hash_v2(
        header, body, chain_id=chain_id, seq=seq, prev_hash=prev_hash, hmac_key=hmac_key
    )
    return body, digest


@pytest.fixture
def rehash() -> Callable[..., tuple[str, str]]:
    """The forger's helper: (body_digest, hash) of a row as an attacker recomputes them."""
    return _rehash


def _wait_until(predicate: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """Poll a condition (generous deadline, for busy machines): tests wait on conditions,
    never on wall-clock windows."""
    return _wait_until

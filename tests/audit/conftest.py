"""Shared audit fixtures: a migrated SQLite file, a throwaway PostgreSQL database, events.

PostgreSQL tests never skip: if the server is unreachable they fail with a message saying
how to start it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from audit import AuditEvent, AuditStore, upgrade

PG_ADMIN_URL = os.environ.get(
    "GUARDRAILS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
POLICY_DIGEST = "sha256:" + "ab" * 32
EventFactory = Callable[..., AuditEvent]


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    admin = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"gr_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {exc.orig}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point GUARDRAILS_TEST_PG_URL at a server.",
            pytrace=False,
        )
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    """The session PostgreSQL database, migrated to head and emptied for this test."""
    upgrade(pg_database_url)
    engine = create_engine(pg_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_events, audit_chains, audit_policies"))
    finally:
        engine.dispose()
    return pg_database_url


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

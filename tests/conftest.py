"""Fixtures every test tree shares: a throwaway database on the real PostgreSQL.

PostgreSQL tests never skip: if the server is unreachable they fail with a message saying
how to start it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from audit import upgrade

PG_ADMIN_URL = os.environ.get(
    "GUARDRAILS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    # pre-ping: a test may restart the server (tests/audit/test_faults.py), which kills
    # the pooled admin connection this fixture drops the database with at the end.
    admin = create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
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
            conn.execute(
                text(
                    "TRUNCATE audit_events, audit_chains, audit_policies, "
                    "audit_checkpoints, audit_purges"
                )
            )
    finally:
        engine.dispose()
    return pg_database_url

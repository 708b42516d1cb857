"""Alembic owns the schema: up, down to base, up again, and no drift from the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from audit import AuditStore, current_revision, downgrade, upgrade
from audit.engine import create_audit_engine
from audit.exceptions import AuditConfigError
from audit.migrate import migrations_dir
from audit.schema import metadata

TABLES = {"audit_chains", "audit_checkpoints", "audit_events", "audit_policies", "audit_purges"}


def _tables(url: str) -> set[str]:
    engine = create_audit_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _autogenerate_diff(url: str) -> list[object]:
    engine = create_audit_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    upgrade(url)
    assert current_revision(url) == "0004"
    assert _tables(url) == TABLES
    downgrade(url, "base")
    assert current_revision(url) is None
    assert _tables(url) == set()
    upgrade(url, "head")
    assert current_revision(url) == "0004"
    assert _autogenerate_diff(url) == []


def test_sqlite_upgrade_downgrade_upgrade_without_drift(tmp_path):
    """On SQLite: head, base, head again, and autogenerate finds nothing to change."""
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade_without_drift(pg_database_url):
    """On PostgreSQL: head, base, head again, and autogenerate finds nothing to change."""
    _round_trip(pg_database_url)


def test_fresh_database_has_no_revision(tmp_path):
    """A never-migrated store reports no revision."""
    assert current_revision(f"sqlite:///{tmp_path / 'empty.db'}") is None


def test_auto_upgrade_creates_the_schema(tmp_path):
    """AuditStore(auto_upgrade=True) migrates a new file to head."""
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    AuditStore(url, auto_upgrade=True).close()
    assert current_revision(url) == "0004"


def test_unknown_revision_is_a_config_error(tmp_path):
    """Asking for a revision that does not exist fails with AuditConfigError."""
    with pytest.raises(AuditConfigError, match="nope"):
        upgrade(f"sqlite:///{tmp_path / 'x.db'}", "nope")


@pytest.mark.parametrize("url", ["not a url", "sqlite://", "sqlite:///:memory:", "nosuch://x/y"])
def test_unusable_urls_are_config_errors(url):
    """Bad URLs, in-memory SQLite and unknown dialects are refused before any work."""
    with pytest.raises(AuditConfigError):
        AuditStore(url)


def test_migrations_are_found_in_the_checkout():
    """In a checkout, the top-level migrations/ folder is used."""
    found = migrations_dir()
    assert found.name == "migrations"
    assert (found / "versions" / "0001_initial.py").is_file()

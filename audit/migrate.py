"""Programmatic Alembic: upgrade, downgrade and read the revision of an audit store.

No ``alembic.ini`` is needed. The migration scripts are found at ``<repo>/migrations`` in a
checkout, else at ``audit/_migrations`` in an installed wheel (pyproject force-includes them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from audit.engine import IMMEDIATE, create_audit_engine, safe_url
from audit.exceptions import AuditConfigError, AuditStoreError
from audit.schema import EVENTS

__all__ = [
    "current_revision",
    "downgrade",
    "migrations_dir",
    "require_schema",
    "upgrade",
    "upgrade_engine",
]

# An arbitrary constant: serialises concurrent upgrades of one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6175646974  # "audit"


def migrations_dir() -> Path:
    """The folder holding ``env.py`` and ``versions/`` (checkout first, then the wheel copy).

    Raises:
        AuditConfigError: neither location holds an Alembic environment.
    """
    package = Path(__file__).resolve().parent
    candidates = (package.parent / "migrations", package / "_migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise AuditConfigError(
        "audit migrations not found; looked in " + ", ".join(str(c) for c in candidates)
    )


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def _run(engine: Engine, action: Callable[[Config], None]) -> None:
    """Run an Alembic command inside one transaction that also holds the migration lock."""
    try:
        with engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                action(_config(conn))
    except CommandError as exc:
        raise AuditConfigError(f"migration failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise AuditStoreError(
            f"migrating the audit store at {safe_url(engine.url)} failed: {exc}"
        ) from exc


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Upgrade the store behind ``engine`` to ``revision`` (see `upgrade`)."""
    _run(engine, lambda cfg: command.upgrade(cfg, revision))


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the audit store at ``url`` to ``revision``; concurrent callers are serialised.

    Raises:
        AuditConfigError: bad URL or unknown revision.
        AuditStoreError: the store is unreachable or a migration step failed.
    """
    engine = create_audit_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Downgrade the audit store at ``url`` to ``revision`` (``"base"`` drops every table).

    Raises:
        AuditConfigError: bad URL or unknown revision.
        AuditStoreError: the store is unreachable or a migration step failed.
    """
    engine = create_audit_engine(url)
    try:
        _run(engine, lambda cfg: command.downgrade(cfg, revision))
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the store at ``url`` is at, or None if it was never migrated.

    Raises:
        AuditConfigError: bad URL.
        AuditStoreError: the store is unreachable.
    """
    engine = create_audit_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"reading the revision of {safe_url(url)} failed: {exc}") from exc
    finally:
        engine.dispose()


def require_schema(conn: Connection) -> None:
    """Fail with an instruction, not an SQL error, when the audit schema is missing or old.

    Raises:
        AuditConfigError: no ``audit_events`` table, or it lacks columns this version reads
            (the database was never upgraded to the current revision).
    """
    inspector = inspect(conn)
    if not inspector.has_table(EVENTS.name):
        raise AuditConfigError(
            f"{conn.engine.url.render_as_string(hide_password=True)} holds no audit log "
            f"(no {EVENTS.name} table): run `guardrails db upgrade` first"
        )
    present = {column["name"] for column in inspector.get_columns(EVENTS.name)}
    missing = sorted(set(EVENTS.c.keys()) - present)
    if missing:
        raise AuditConfigError(
            f"the audit schema at {conn.engine.url.render_as_string(hide_password=True)} is "
            f"older than this version (no column(s) {', '.join(missing)}): "
            "run `guardrails db upgrade`"
        )

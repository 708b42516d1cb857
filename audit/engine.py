"""Where the audit store lives: the default URL and engines configured for durable writes.

SQLite gets WAL, ``synchronous=FULL`` (a commit is on disk when it returns), foreign keys
and a busy timeout, with transactions begun by us (``BEGIN IMMEDIATE`` for writers, so two
writers on one file queue on the lock instead of failing to upgrade a read lock).
PostgreSQL gets a connect timeout and pre-ping, so an outage fails fast and a restart heals.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from audit.exceptions import AuditConfigError

__all__ = [
    "DEFAULT_AUDIT_URL",
    "IMMEDIATE",
    "create_audit_engine",
    "default_audit_url",
    "parse_audit_url",
    "safe_url",
]

DEFAULT_AUDIT_URL = "sqlite:///guardrails-audit.db"
IMMEDIATE = "audit_begin_immediate"
"""Execution option: on SQLite, begin this connection's transaction with BEGIN IMMEDIATE."""

_SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_CONNECT_TIMEOUT_S = 10


def default_audit_url() -> str:
    """``$GUARDRAILS_AUDIT_URL`` if set and not empty, else ``sqlite:///guardrails-audit.db``."""
    return os.environ.get("GUARDRAILS_AUDIT_URL") or DEFAULT_AUDIT_URL


def parse_audit_url(url: str | URL) -> URL:
    """Parse ``url``, refusing what the audit store cannot use.

    Raises:
        AuditConfigError: the URL does not parse, or names in-memory SQLite (the writer
            thread needs its own connection to the same database, so a file is required).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise AuditConfigError(f"bad audit database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise AuditConfigError(
            f"in-memory SQLite ({url!r}) cannot hold an audit log: use a file, "
            "e.g. sqlite:///guardrails-audit.db"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """``url`` with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (pysqlite would
        # otherwise begin lazily and never with IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_audit_engine(url: str | URL, *, must_exist: bool = False) -> Engine:
    """An engine for the audit store at ``url``, configured as the module docstring says.

    Args:
        url: the database URL.
        must_exist: refuse a SQLite file that does not exist yet (connecting would create
            an empty one: right for a writer, wrong for a verifier).

    Raises:
        AuditConfigError: bad URL, no driver installed for it, or (``must_exist``) no file.
    """
    parsed = parse_audit_url(url)
    backend = parsed.get_backend_name()
    if must_exist and backend == "sqlite" and parsed.database is not None:
        path = parsed.database.removeprefix("file:").split("?", 1)[0]
        if not os.path.exists(path):
            raise AuditConfigError(f"no audit database at {os.path.abspath(path)}")
    kwargs: dict[str, Any] = {}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        if "timeout" not in parsed.query:
            connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
        connect_args["check_same_thread"] = False
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    except ArgumentError as exc:  # includes NoSuchModuleError (unknown dialect/driver)
        raise AuditConfigError(f"unusable audit database URL {safe_url(parsed)!r}: {exc}") from exc
    except ImportError as exc:
        raise AuditConfigError(
            f"no database driver for {safe_url(parsed)!r}: {exc} (install it, e.g. psycopg)"
        ) from exc
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine

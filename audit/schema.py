"""The audit schema as SQLAlchemy 2 models; Alembic migrations in ``migrations/`` own the DDL.

``audit_events`` (one row per guarded call, chained per writer), ``audit_policies`` (policy
text stored once per digest), ``audit_chains`` (one row per writer chain, whose head moves in
the same transaction as the rows it covers, so deleting the last rows of a chain is
detectable), ``audit_checkpoints`` (signed Merkle tree heads, see `audit.checkpoint`) and
``audit_purges`` (each retention purge: when, the cutoff, and per chain the highest seq whose
body it removed, so verify knows which rows may lack a body).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "CHAINS",
    "CHECKPOINTS",
    "EVENTS",
    "GENESIS_HASH",
    "NAMING_CONVENTION",
    "POLICIES",
    "PURGES",
    "AuditChainRow",
    "AuditCheckpointRow",
    "AuditEventRow",
    "AuditPolicyRow",
    "AuditPurgeRow",
    "Base",
    "JSONDocument",
    "UTCDateTime",
    "metadata",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first event of every chain."""

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

JSONDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL (indexable; the hash encoding tolerates its
number normalisation, see `audit.chain`)."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC on every backend.

    SQLite has no timezone type: the value is stored as naive UTC and read back with
    ``tzinfo=UTC``, so it round-trips (to the microsecond) like PostgreSQL's timestamptz.
    Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC (naive UTC on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: audit timestamps must be tz-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base bound to the audit `metadata` (with its naming convention)."""

    metadata = metadata


class AuditPolicyRow(Base):
    """One policy text, stored once per content digest."""

    __tablename__ = "audit_policies"

    digest: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditChainRow(Base):
    """One writer's hash chain and its committed head."""

    __tablename__ = "audit_chains"

    chain_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    # "sha256" or "hmac-sha256": lets verify say "needs a key" instead of "every row edited".
    hash_algorithm: Mapped[str] = mapped_column(String(16))
    head_seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))


class AuditEventRow(Base):
    """One guarded call, with its position in a writer's hash chain."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        # The query CLI filters by time plus one of these, newest first.
        Index(None, "tenant", "created_at"),
        Index(None, "user", "created_at"),
        Index(None, "model", "created_at"),
        Index(None, "action", "created_at"),
        Index(None, "policy_digest", "created_at"),
        # Unclosed streams: opens without a close of the same request.
        Index(None, "phase", "request_id"),
    )

    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    request_id: Mapped[str] = mapped_column(String(255), index=True)
    tenant: Mapped[str | None] = mapped_column(String(255))
    user: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    prompt: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    text_storage: Mapped[str] = mapped_column(String(16))
    input_action: Mapped[str | None] = mapped_column(String(32))
    output_action: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    findings: Mapped[Any] = mapped_column(JSONDocument)
    flagged: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Double)
    timings_ms: Mapped[Any] = mapped_column(JSONDocument)
    error: Mapped[str | None] = mapped_column(Text)
    streamed: Mapped[bool] = mapped_column(Boolean)
    released_chars: Mapped[int | None] = mapped_column(Integer)
    policy_name: Mapped[str] = mapped_column(String(255))
    policy_version: Mapped[str] = mapped_column(String(64))
    policy_digest: Mapped[str] = mapped_column(String(128), ForeignKey("audit_policies.digest"))
    meta: Mapped[Any] = mapped_column("metadata", JSONDocument)
    # "call" | "open" | "close" (two-phase stream records; see audit.event.AuditEvent).
    phase: Mapped[str] = mapped_column(String(8), server_default="call")
    stream_end: Mapped[str | None] = mapped_column(String(16))
    # Digest of the purgeable body (see audit.chain); NULL on rows written before 0004.
    body_digest: Mapped[str | None] = mapped_column(String(64))
    # Set by a retention purge, which empties the body (prompt, output, findings, metadata,
    # error); the hash and chain links stay, so the chain and its Merkle tree still verify.
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditCheckpointRow(Base):
    """One signed tree head of one chain (see `audit.checkpoint`)."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index(None, "chain_id", "tree_size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[str] = mapped_column(String(32))
    tree_size: Mapped[int] = mapped_column(Integer)
    root_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class AuditPurgeRow(Base):
    """One retention purge, recorded in the transaction that performed it."""

    __tablename__ = "audit_purges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())
    events_purged: Mapped[int] = mapped_column(Integer)
    # {chain_id: highest purged seq}
    chains: Mapped[Any] = mapped_column(JSONDocument)
    # Chained purge records (keyed with the store's HMAC key); NULL before 0004.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


# Core handles for executemany and queries (``__table__`` is typed as a bare FromClause).
EVENTS = cast(Table, AuditEventRow.__table__)
POLICIES = cast(Table, AuditPolicyRow.__table__)
CHAINS = cast(Table, AuditChainRow.__table__)
CHECKPOINTS = cast(Table, AuditCheckpointRow.__table__)
PURGES = cast(Table, AuditPurgeRow.__table__)

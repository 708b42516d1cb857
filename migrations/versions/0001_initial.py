"""Initial audit schema: events, policies (once per digest) and writer chains.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create the three audit tables and their indexes."""
    op.create_table(
        "audit_policies",
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_audit_policies")),
    )
    op.create_table(
        "audit_chains",
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hash_algorithm", sa.String(16), nullable=False),
        sa.Column("head_seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_chains")),
    )
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(255), nullable=True),
        sa.Column("user", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("text_storage", sa.String(16), nullable=False),
        sa.Column("input_action", sa.String(32), nullable=True),
        sa.Column("output_action", sa.String(32), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("findings", _JSON, nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("timings_ms", _JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("released_chars", sa.Integer(), nullable=True),
        sa.Column("policy_name", sa.String(255), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_digest", sa.String(128), nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_digest"],
            ["audit_policies.digest"],
            name=op.f("fk_audit_events_policy_digest_audit_policies"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("chain_id", "seq", name=op.f("uq_audit_events_chain_id_seq")),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.create_index(batch.f("ix_audit_events_created_at"), ["created_at"])
        batch.create_index(batch.f("ix_audit_events_tenant_created_at"), ["tenant", "created_at"])
        batch.create_index(batch.f("ix_audit_events_action"), ["action"])
        batch.create_index(batch.f("ix_audit_events_request_id"), ["request_id"])
        batch.create_index(batch.f("ix_audit_events_policy_digest"), ["policy_digest"])


def downgrade() -> None:
    """Drop the audit tables (and with them every recorded event)."""
    op.drop_table("audit_events")
    op.drop_table("audit_chains")
    op.drop_table("audit_policies")

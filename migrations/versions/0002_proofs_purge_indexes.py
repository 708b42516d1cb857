"""Signed Merkle checkpoints, retention purges, and indexes for the query CLI.

Adds ``audit_checkpoints`` and ``audit_purges``, the nullable ``audit_events.purged_at``
column, and (column, created_at) indexes for the common filters; the single-column
``action`` and ``policy_digest`` indexes are replaced by their (.., created_at) versions.
Existing rows and their hashes are untouched: chains written under 0001 verify unchanged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_NEW_INDEXES = {
    "ix_audit_events_user_created_at": ["user", "created_at"],
    "ix_audit_events_model_created_at": ["model", "created_at"],
    "ix_audit_events_action_created_at": ["action", "created_at"],
    "ix_audit_events_policy_digest_created_at": ["policy_digest", "created_at"],
}


def upgrade() -> None:
    """Create the checkpoint and purge tables, the purge marker and the query indexes."""
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("tree_size", sa.Integer(), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(
        op.f("ix_audit_checkpoints_chain_id_tree_size"),
        "audit_checkpoints",
        ["chain_id", "tree_size"],
    )
    op.create_table(
        "audit_purges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_purged", sa.Integer(), nullable=False),
        sa.Column("chains", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_purges")),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index(batch.f("ix_audit_events_action"))
        batch.drop_index(batch.f("ix_audit_events_policy_digest"))
        for name, columns in _NEW_INDEXES.items():
            batch.create_index(batch.f(name), columns)


def downgrade() -> None:
    """Back to 0001 (checkpoints and purge records are lost; purged bodies stay empty)."""
    with op.batch_alter_table("audit_events") as batch:
        for name in _NEW_INDEXES:
            batch.drop_index(batch.f(name))
        batch.create_index(batch.f("ix_audit_events_action"), ["action"])
        batch.create_index(batch.f("ix_audit_events_policy_digest"), ["policy_digest"])
        batch.drop_column("purged_at")
    op.drop_table("audit_purges")
    op.drop_index(op.f("ix_audit_checkpoints_chain_id_tree_size"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")

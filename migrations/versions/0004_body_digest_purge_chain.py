"""Header + body-digest hashing and authenticated purge records.

Adds ``audit_events.body_digest`` (events written from now on hash their header fields plus
this digest of their body, so a purge keeps every header verifiable) and
``audit_purges.prev_hash`` / ``audit_purges.hash`` (each purge record is chained to the
previous one, keyed with the store's HMAC key when it has one). Existing rows keep NULL and
verify as before (their original encoding; their purges unauthenticated).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the body digest and the purge chain columns (nullable: old rows stay as they are)."""
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("body_digest", sa.String(64), nullable=True))
    with op.batch_alter_table("audit_purges") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))


def downgrade() -> None:
    """Back to 0003 (events written since then no longer verify under 0003's code)."""
    with op.batch_alter_table("audit_purges") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("body_digest")

"""Two-phase stream records: ``audit_events.phase`` and ``audit_events.stream_end``.

A stream is recorded as an ``open`` event (before the generator runs) and a ``close`` event
(before the end of the stream is released); plain calls stay one ``call`` event. Existing
rows become ``phase='call'``, ``stream_end=NULL``, and their hashes verify unchanged (the
hash encoding leaves both fields out while they hold those defaults, see ``audit.chain``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the phase (default ``call``) and stream_end columns, and the unclosed index."""
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("phase", sa.String(8), server_default="call", nullable=False))
        batch.add_column(sa.Column("stream_end", sa.String(16), nullable=True))
        batch.create_index(batch.f("ix_audit_events_phase_request_id"), ["phase", "request_id"])


def downgrade() -> None:
    """Back to 0002 (stream halves become indistinguishable from calls)."""
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index(batch.f("ix_audit_events_phase_request_id"))
        batch.drop_column("stream_end")
        batch.drop_column("phase")

"""Stream health: last message, counts and heartbeats per stream and detector.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_health",
        sa.Column("stream", sa.String(length=256), nullable=False),
        sa.Column("detector", sa.String(length=128), nullable=False),
        sa.Column("last_message_at", sa.DateTime(), nullable=True),
        sa.Column("messages_total", sa.BigInteger(), nullable=False),
        sa.Column("quarantined_total", sa.BigInteger(), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_status", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "detector", name=op.f("pk_stream_health")),
    )


def downgrade() -> None:
    op.drop_table("stream_health")

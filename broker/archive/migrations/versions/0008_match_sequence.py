"""Alerts: the order in which the match stage processed them.

``alerts.match_seq`` numbers alerts as match workers process them, under one
lock: a worker catches its engine up with every alert numbered after the
last one it knows before it matches its own, so members of one coincidence
that reach different workers still meet.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("match_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_alerts_match_seq", "alerts", ["match_seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_alerts_match_seq", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("match_seq")

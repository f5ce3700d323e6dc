"""Held deliveries: embargoed and proprietary VOEvents wait in the outbox.

``deliveries.held_until`` (when a held delivery becomes due; NULL on a held
row: never) and ``deliveries.released_at`` (when it was released), indexed with
the state so the release poll reads only rows whose time has come; and an index
on ``alerts.embargo_until`` for the live feed's "embargo just ended" poll.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("held_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("released_at", sa.DateTime(), nullable=True))
    op.create_index("ix_deliveries_state_held_until", "deliveries", ["state", "held_until"])
    op.create_index("ix_alerts_embargo_until", "alerts", ["embargo_until"])


def downgrade() -> None:
    op.drop_index("ix_alerts_embargo_until", table_name="alerts")
    op.drop_index("ix_deliveries_state_held_until", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("released_at")
        batch.drop_column("held_until")

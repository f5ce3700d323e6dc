"""VOEvents: indexes on the alert and the coincidence each one carries.

The dashboard's latency figures and detail pages look VOEvents up by their
alert or coincidence; without these indexes every lookup read the whole table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_voevents_alert_id", "voevents", ["alert_id"])
    op.create_index("ix_voevents_coincidence_id", "voevents", ["coincidence_id"])


def downgrade() -> None:
    op.drop_index("ix_voevents_coincidence_id", table_name="voevents")
    op.drop_index("ix_voevents_alert_id", table_name="voevents")

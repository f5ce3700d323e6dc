"""Alerts: one index on (hpx29, event_time) instead of hpx29 alone.

A cone over a time window reads the alerts in the cone's order-29 ranges;
with the event time in the same index entry, the time bound is checked
without visiting the row (one of the query-path changes measured together
in bench/RESULTS.md).  The index still serves lookups by
``hpx29`` alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_hpx29_event_time", "alerts", ["hpx29", "event_time"])
    op.drop_index("ix_alerts_hpx29", table_name="alerts")


def downgrade() -> None:
    op.create_index("ix_alerts_hpx29", "alerts", ["hpx29"])
    op.drop_index("ix_alerts_hpx29_event_time", table_name="alerts")

"""Alerts indexed by event id alone: one event across transports (issue 16, item 8).

The same LVK superevent or mission trigger is archived once per stream that brought
it (``source``), and the cross-match engine takes them for one event
(``crossmatch.events.event_key``).  Recalling an event's revisions from every stream
reads them by ``event_id``; the ``(source, event_id, revision)`` key cannot serve that.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_event_id", "alerts", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_event_id", table_name="alerts")

"""Dashboard: acknowledgements, when each alert was matched, stream connections.

* ``acknowledgements``: who acknowledged a significant coincidence, and when
  (the dashboard's alarm stays up until one exists).
* ``alerts.matched_at``: when the cross-match engine had processed the alert
  (the "matched" step of the latency chain event -> received -> matched ->
  published -> acknowledged by Comet).
* ``stream_health.connected`` / ``connection_changed_at``: whether the
  stream's listener holds a connection, as the listener last reported it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "acknowledgements",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("coincidence_id", PK, nullable=False),
        sa.Column("acked_by", sa.String(length=128), nullable=False),
        sa.Column("token_id", PK, nullable=True),
        sa.Column("acked_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["coincidence_id"], ["coincidences.id"], ondelete="CASCADE",
                                name="fk_acknowledgements_coincidence_id_coincidences"),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="SET NULL",
                                name="fk_acknowledgements_token_id_api_tokens"),
        sa.PrimaryKeyConstraint("id", name="pk_acknowledgements"),
    )
    op.create_index("ix_acknowledgements_coincidence_id", "acknowledgements",
                    ["coincidence_id"])
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("matched_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("stream_health") as batch:
        batch.add_column(sa.Column("connected", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("connection_changed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stream_health") as batch:
        batch.drop_column("connection_changed_at")
        batch.drop_column("connected")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("matched_at")
    op.drop_index("ix_acknowledgements_coincidence_id", table_name="acknowledgements")
    op.drop_table("acknowledgements")

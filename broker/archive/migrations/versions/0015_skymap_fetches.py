"""Sky maps by URL are fetched (issue 16, item 2): the fetch queue.

One row per alert revision that names a sky map by URL (GCN JSON ``healpix_url``,
LVK VOEvent ``skymap_fits``, Fermi GBM ``LocationMap_URL`` ...), queued with the
alert and taken by the broker's fetch workers; the map goes to ``skymaps``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skymap_fetches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("skymap_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"],
                                name=op.f("fk_skymap_fetches_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skymap_fetches")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_skymap_fetches_alert_id")),
    )
    with op.batch_alter_table("skymap_fetches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_skymap_fetches_state_next_attempt_at"),
                              ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("skymap_fetches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_skymap_fetches_state_next_attempt_at"))
    op.drop_table("skymap_fetches")

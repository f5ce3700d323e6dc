"""In-flight marks: the messages a process is normalizing (issue 14, item 5).

A mark is written with the raw bytes and cleared with the results; one left by
a process that died is how a restart recognizes a message that may have killed
it, instead of decoding it again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_inflight",
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column(
            "transport",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("full_size", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_sha256"],
            ["raw_payloads.sha256"],
            name=op.f("fk_ingest_inflight_raw_sha256_raw_payloads"),
        ),
        sa.PrimaryKeyConstraint("raw_sha256", "owner", name=op.f("pk_ingest_inflight")),
    )
    with op.batch_alter_table("ingest_inflight", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_inflight_owner"), ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ingest_inflight", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_inflight_owner"))
    op.drop_table("ingest_inflight")

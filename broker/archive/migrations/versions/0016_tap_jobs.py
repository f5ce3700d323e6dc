"""Asynchronous TAP queries (issue 18, item 1): UWS 1.1 jobs at /tap/async.

One row per job: its owner (the token that created it, or anonymous) and that
token's scopes, which it runs with; its phase, parameters and times; its result
(the VOTable or CSV as served) or error.  Rows go at their destruction time.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tap_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=True),
        sa.Column("scopes", sa.String(length=256), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("parameters", sa.JSON(none_as_null=True).with_variant(
            postgresql.JSONB(none_as_null=True), "postgresql"), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("execution_duration_s", sa.Integer(), nullable=False),
        sa.Column("destruction", sa.DateTime(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"),
                  nullable=True),
        sa.Column("result_type", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"],
                                name="fk_tap_jobs_token_id_api_tokens", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_tap_jobs"),
    )
    op.create_index("ix_tap_jobs_owner_created_at", "tap_jobs", ["owner", "created_at"])
    op.create_index("ix_tap_jobs_destruction", "tap_jobs", ["destruction"])


def downgrade() -> None:
    op.drop_index("ix_tap_jobs_destruction", table_name="tap_jobs")
    op.drop_index("ix_tap_jobs_owner_created_at", table_name="tap_jobs")
    op.drop_table("tap_jobs")

"""Secret keys of the archive (issue 14 item 4: page cursors sealed, not row ids in clear).

A cursor that holds a row id in clear tells an anonymous caller how many hidden
rows lie between two public ones; cursors are now sealed with a key every API
process of the archive shares, made on first use and kept here.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # Made here so every process finds it; broker.archive.sealing makes one too if it is missing.
    keys = sa.table("broker_keys", sa.column("name", sa.String),
                    sa.column("value", sa.LargeBinary), sa.column("created_at", sa.DateTime))
    op.bulk_insert(keys, [{"name": "cursor", "value": secrets.token_bytes(32),
                           "created_at": datetime.now(UTC).replace(tzinfo=None)}])


def downgrade() -> None:
    op.drop_table("broker_keys")

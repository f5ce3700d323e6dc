"""Trigger tokens bound to detectors; each alert revision records the token that wrote it.

``api_tokens.detectors`` (a JSON list, NULL for a token bound to none) names
the detectors a ``write:triggers`` token may post, revise and retract
triggers for.  ``alerts.token_id`` is the token that wrote an HTTP trigger's
revision (NULL for every other transport).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("detectors", json, nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("token_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("token_id")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("detectors")

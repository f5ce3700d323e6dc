"""Alerts: content hash of the normalized document, for duplicate detection.

The same alert revision may arrive in two encodings (LVK JSON and Avro) or over
two transports (a VOEvent over Kafka and over VTP) with different raw bytes; it
is a duplicate when its normalized content is the same.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copy of the rule in broker.archive.store.content_sha256 as of this revision.
_RECEIPT_FIELDS = ("received_time", "raw_sha256", "raw_ref")


def _content_sha256(document: dict) -> str:
    body = {k: v for k, v in document.items() if k not in _RECEIPT_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    alerts = sa.table("alerts", sa.column("id"), sa.column("document", sa.JSON()),
                      sa.column("content_sha256"))
    rows = conn.execute(sa.select(alerts.c.id, alerts.c.document)).all()
    for row in rows:
        document = row.document if isinstance(row.document, dict) else json.loads(row.document)
        conn.execute(alerts.update().where(alerts.c.id == row.id)
                     .values(content_sha256=_content_sha256(document)))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("content_sha256")

"""Quarantine is idempotent (issue 16, item 11): one row per refusal.

Replaying 72 refused messages made 144 rows: every replay added its rows again.
Each row now carries ``refusal_sha256``, the SHA-256 of its source, raw payload
hash and reason, unique, so a message refused again for the same reason on the
same stream is the row already there.  Rows duplicated before this migration are
folded into their first.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def refusal_sha256(source: str, raw_sha256: str, reason: str) -> str:
    """The key of one refusal (kept in step with ``broker.archive.store``)."""
    return hashlib.sha256("\0".join((source, raw_sha256, reason)).encode(
        "utf-8", "surrogatepass")).hexdigest()


def upgrade() -> None:
    op.add_column("quarantine", sa.Column("refusal_sha256", sa.String(length=64),
                                          nullable=True))
    conn = op.get_bind()
    table = sa.table("quarantine", sa.column("id", sa.BigInteger),
                     sa.column("source", sa.String), sa.column("raw_sha256", sa.String),
                     sa.column("reason", sa.Text), sa.column("refusal_sha256", sa.String))
    seen: set[str] = set()
    duplicates: list[int] = []
    keys: list[dict[str, object]] = []
    for row in conn.execute(sa.select(table.c.id, table.c.source, table.c.raw_sha256,
                                      table.c.reason).order_by(table.c.id)):
        key = refusal_sha256(row.source, row.raw_sha256, row.reason)
        if key in seen:
            duplicates.append(row.id)
        else:
            seen.add(key)
            keys.append({"row_id": row.id, "key": key})
    for start in range(0, len(duplicates), 500):
        conn.execute(table.delete().where(table.c.id.in_(duplicates[start:start + 500])))
    if keys:
        conn.execute(table.update().where(table.c.id == sa.bindparam("row_id"))
                     .values(refusal_sha256=sa.bindparam("key")), keys)
    with op.batch_alter_table("quarantine") as batch:
        batch.alter_column("refusal_sha256", existing_type=sa.String(length=64),
                           nullable=False)
    op.create_index("ix_quarantine_refusal_sha256", "quarantine", ["refusal_sha256"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_quarantine_refusal_sha256", table_name="quarantine")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("refusal_sha256")

"""PostgreSQL: store raw payloads and sky maps out of line without compression.

Most large payloads are compressed already (ZTF cutouts are gzipped FITS, sky
maps are gzipped or base64 of gzip); pglz spent CPU failing to shrink them
and halved ZTF raw-payload throughput (738 -> 1,471 alerts/s with EXTERNAL,
measured with bench/listeners_bench.py).  No-op on SQLite.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (("raw_payloads", "data"), ("skymaps", "data"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED")

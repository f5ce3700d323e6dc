"""Query API: coincidence FAR and sky index, VOEvent citations.

* ``coincidences.far_hz``: the smallest false-alarm rate among the
  coincidence's significance figures in Hz, so that ``far_max_hz`` filters
  coincidences as it filters alerts; indexes on ``hpx29`` and
  ``reference_time`` for cone and time queries.
* ``voevent_citations``: every ``Citations/EventIVORN`` of every VOEvent the
  broker issued, for the ``cites`` / ``cited_by`` filters.  Backfilled from
  the stored bytes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Deferred to the upgrade itself: Alembic executes every revision file each time it
    # reads the history (any command that checks the archive's schema), and voevent-parse
    # costs about 0.3 s to import.
    from broker.archive.store import coincidence_far_hz
    from broker.publish.voevent_build import citations_of

    with op.batch_alter_table("coincidences") as batch:
        batch.add_column(sa.Column("far_hz", sa.Float(), nullable=True))
    op.create_index("ix_coincidences_hpx29", "coincidences", ["hpx29"])
    op.create_index("ix_coincidences_reference_time", "coincidences", ["reference_time"])
    op.create_table(
        "voevent_citations",
        sa.Column("voevent_id", PK, nullable=False),
        sa.Column("cited_ivorn", sa.String(length=512), nullable=False),
        sa.Column("cite", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["voevent_id"], ["voevents.id"], ondelete="CASCADE",
                                name="fk_voevent_citations_voevent_id_voevents"),
        sa.PrimaryKeyConstraint("voevent_id", "cited_ivorn", name="pk_voevent_citations"),
    )
    op.create_index("ix_voevent_citations_cited_ivorn", "voevent_citations", ["cited_ivorn"])

    conn = op.get_bind()
    coincidences = sa.table("coincidences", sa.column("id"), sa.column("document", sa.JSON()),
                            sa.column("far_hz"))
    for row in conn.execute(sa.select(coincidences.c.id, coincidences.c.document)).all():
        doc = row.document if isinstance(row.document, dict) else json.loads(row.document)
        conn.execute(coincidences.update().where(coincidences.c.id == row.id)
                     .values(far_hz=coincidence_far_hz(doc)))
    voevents = sa.table("voevents", sa.column("id"), sa.column("xml"))
    citations = sa.table("voevent_citations", sa.column("voevent_id"),
                         sa.column("cited_ivorn"), sa.column("cite"))
    for row in conn.execute(sa.select(voevents.c.id, voevents.c.xml)).all():
        cited = citations_of(bytes(row.xml))
        if cited:
            conn.execute(citations.insert(), [{"voevent_id": row.id, "cited_ivorn": ivorn,
                                               "cite": cite} for ivorn, cite in cited])


def downgrade() -> None:
    op.drop_index("ix_voevent_citations_cited_ivorn", table_name="voevent_citations")
    op.drop_table("voevent_citations")
    op.drop_index("ix_coincidences_reference_time", table_name="coincidences")
    op.drop_index("ix_coincidences_hpx29", table_name="coincidences")
    with op.batch_alter_table("coincidences") as batch:
        batch.drop_column("far_hz")

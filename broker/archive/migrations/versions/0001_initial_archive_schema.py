"""Initial archive schema: alerts, raw payloads, sky maps, coincidences, VOEvents,
the delivery outbox, provenance, quarantine and API tokens.

Times are naive UTC timestamps (the models' UTCDateTime type adds the zone back).

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "coincidences",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ivorn", sa.String(length=512), nullable=False),
        sa.Column("result_key", sa.String(length=64), nullable=False),
        sa.Column("pairing", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column(
            "supersedes_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("reference_time", sa.DateTime(), nullable=True),
        sa.Column("ra_deg", sa.Float(), nullable=True),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("hpx29", sa.BigInteger(), nullable=True),
        sa.Column("overlap", sa.Float(), nullable=True),
        sa.Column("engine_version", sa.String(length=64), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column(
            "document",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["supersedes_id"],
            ["coincidences.id"],
            name=op.f("fk_coincidences_supersedes_id_coincidences"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coincidences")),
        sa.UniqueConstraint("ivorn", name=op.f("uq_coincidences_ivorn")),
        sa.UniqueConstraint("result_key", name=op.f("uq_coincidences_result_key")),
    )
    with op.batch_alter_table("coincidences", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coincidences_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coincidences_pairing_created_at"),
            ["pairing", "created_at"],
            unique=False,
        )

    op.create_table(
        "raw_payloads",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "data", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"), nullable=False
        ),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("first_received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_raw_payloads")),
    )
    op.create_table(
        "skymaps",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "data", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"), nullable=False
        ),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("area_90_deg2", sa.Float(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_skymaps")),
    )
    op.create_table(
        "alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ivorn", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("source_ivorn", sa.String(length=512), nullable=True),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("alert_type", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("messenger", sa.String(length=32), nullable=False),
        sa.Column("facility", sa.String(length=128), nullable=False),
        sa.Column("instrument", sa.String(length=128), nullable=True),
        sa.Column("event_time", sa.DateTime(), nullable=False),
        sa.Column("event_time_error_s", sa.Float(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("loc_kind", sa.String(length=16), nullable=False),
        sa.Column("ra_deg", sa.Float(), nullable=True),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("error_radius_deg", sa.Float(), nullable=True),
        sa.Column("hpx29", sa.BigInteger(), nullable=True),
        sa.Column("skymap_sha256", sa.String(length=64), nullable=True),
        sa.Column("far_hz", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("signalness", sa.Float(), nullable=True),
        sa.Column("energy_gev", sa.Float(), nullable=True),
        sa.Column("energy_min_gev", sa.Float(), nullable=True),
        sa.Column("energy_max_gev", sa.Float(), nullable=True),
        sa.Column("data_rights", sa.String(length=16), nullable=False),
        sa.Column("embargo_until", sa.DateTime(), nullable=True),
        sa.Column("pipeline", sa.String(length=256), nullable=True),
        sa.Column("pipeline_version", sa.String(length=128), nullable=True),
        sa.Column("reco_method", sa.String(length=256), nullable=True),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "transport",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "document",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["raw_sha256"], ["raw_payloads.sha256"], name=op.f("fk_alerts_raw_sha256_raw_payloads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("ivorn", name=op.f("uq_alerts_ivorn")),
        sa.UniqueConstraint(
            "source", "event_id", "revision", name=op.f("uq_alerts_source_event_id_revision")
        ),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_event_time"), ["event_time"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_hpx29"), ["hpx29"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alerts_messenger_event_time"), ["messenger", "event_time"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alerts_received_at"), ["received_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alerts_skymap_sha256"), ["skymap_sha256"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alerts_source_ivorn"), ["source_ivorn"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_class", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "transport",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_sha256"],
            ["raw_payloads.sha256"],
            name=op.f("fk_quarantine_raw_sha256_raw_payloads"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_quarantine_source"), ["source"], unique=False)

    op.create_table(
        "coincidence_members",
        sa.Column(
            "coincidence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time_offset_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_coincidence_members_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["coincidence_id"],
            ["coincidences.id"],
            name=op.f("fk_coincidence_members_coincidence_id_coincidences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("coincidence_id", "alert_id", name=op.f("pk_coincidence_members")),
    )
    with op.batch_alter_table("coincidence_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coincidence_members_alert_id"), ["alert_id"], unique=False
        )

    op.create_table(
        "voevents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ivorn", sa.String(length=512), nullable=False),
        sa.Column(
            "xml", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"), nullable=False
        ),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "coincidence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_voevents_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["coincidence_id"],
            ["coincidences.id"],
            name=op.f("fk_voevents_coincidence_id_coincidences"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voevents")),
        sa.UniqueConstraint("ivorn", name=op.f("uq_voevents_ivorn")),
    )
    with op.batch_alter_table("voevents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voevents_created_at"), ["created_at"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "voevent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["voevent_id"],
            ["voevents.id"],
            name=op.f("fk_deliveries_voevent_id_voevents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("voevent_id", "target", name=op.f("uq_deliveries_voevent_id_target")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_state_next_attempt_at"),
            ["state", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "provenance",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_ivorn", sa.String(length=512), nullable=False),
        sa.Column(
            "voevent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "document",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["voevent_id"], ["voevents.id"], name=op.f("fk_provenance_voevent_id_voevents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provenance")),
        sa.UniqueConstraint("subject_ivorn", name=op.f("uq_provenance_subject_ivorn")),
    )


def downgrade() -> None:
    op.drop_table("provenance")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_state_next_attempt_at"))

    op.drop_table("deliveries")
    with op.batch_alter_table("voevents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voevents_created_at"))

    op.drop_table("voevents")
    with op.batch_alter_table("coincidence_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coincidence_members_alert_id"))

    op.drop_table("coincidence_members")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_source"))
        batch_op.drop_index(batch_op.f("ix_quarantine_received_at"))

    op.drop_table("quarantine")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_source_ivorn"))
        batch_op.drop_index(batch_op.f("ix_alerts_skymap_sha256"))
        batch_op.drop_index(batch_op.f("ix_alerts_received_at"))
        batch_op.drop_index(batch_op.f("ix_alerts_messenger_event_time"))
        batch_op.drop_index(batch_op.f("ix_alerts_hpx29"))
        batch_op.drop_index(batch_op.f("ix_alerts_event_time"))

    op.drop_table("alerts")
    op.drop_table("skymaps")
    op.drop_table("raw_payloads")
    with op.batch_alter_table("coincidences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coincidences_pairing_created_at"))
        batch_op.drop_index(batch_op.f("ix_coincidences_created_at"))

    op.drop_table("coincidences")
    op.drop_table("api_tokens")

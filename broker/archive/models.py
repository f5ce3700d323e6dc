"""The archive's tables (SQLAlchemy 2.x declarative models).

The Alembic migrations in :mod:`broker.archive.migrations` create exactly these
tables; ``tests/test_archive.py`` checks that the two agree on both backends.
Times are UTC (:class:`~broker.archive.db.UTCDateTime`), angles ICRS degrees, rates Hz.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broker.archive.db import UTCDateTime

# Integer primary keys: BIGINT on PostgreSQL (an archive outlives 2**31 rows),
# INTEGER on SQLite where only INTEGER PRIMARY KEY is the rowid alias.
PK = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Blob = LargeBinary().with_variant(BYTEA(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:
        # Every model here maps one Table (none maps a join or a subquery), so its
        # __table__ has insert()/update()/delete(); DeclarativeBase declares a FromClause.
        __table__: ClassVar[Table]


class RawPayload(Base):
    """Every message as received, stored once by SHA-256 before it is parsed."""

    __tablename__ = "raw_payloads"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(Blob)
    size_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(256), doc="Stream it first arrived on.")
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Skymap(Base):
    """A HEALPix sky map file, stored once by SHA-256."""

    __tablename__ = "skymaps"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(Blob)
    format: Mapped[str] = mapped_column(String(16), doc="multiorder or flat")
    size_bytes: Mapped[int] = mapped_column(Integer)
    area_90_deg2: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertRow(Base):
    """One alert revision: the normalized columns queried, plus the full document."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("source", "event_id", "revision"),
        Index(None, "event_time"),
        Index(None, "received_at"),
        Index(None, "hpx29", "event_time"),
        Index(None, "messenger", "event_time"),
        Index(None, "source_ivorn"),
        Index(None, "event_id"),  # one event from every stream (crossmatch.events)
        Index(None, "skymap_sha256"),
        Index(None, "match_seq", unique=True),
        # The live feed looks up embargoes that have just ended (issue 14).
        Index(None, "embargo_until"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    ivorn: Mapped[str] = mapped_column(String(512), unique=True)
    source: Mapped[str] = mapped_column(String(256))
    source_ivorn: Mapped[str | None] = mapped_column(String(512))
    event_id: Mapped[str] = mapped_column(String(256))
    revision: Mapped[int] = mapped_column(Integer)
    alert_type: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    messenger: Mapped[str] = mapped_column(String(32))
    facility: Mapped[str] = mapped_column(String(128))
    instrument: Mapped[str | None] = mapped_column(String(128))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime, doc="Trigger time, UTC.")
    event_time_error_s: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loc_kind: Mapped[str] = mapped_column(String(16), doc="point, ellipse, skymap or none")
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    error_radius_deg: Mapped[float | None] = mapped_column(
        Float, doc="Circle radius or ellipse semi-major axis, at the stated containment.")
    hpx29: Mapped[int | None] = mapped_column(
        BigInteger, doc="HEALPix NESTED order-29 pixel of (ra_deg, dec_deg).")
    # No foreign key: an alert names its map by content hash, and the map may be
    # held here (table skymaps) or only at the facility's URL.
    skymap_sha256: Mapped[str | None] = mapped_column(String(64))
    far_hz: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    signalness: Mapped[float | None] = mapped_column(Float)
    energy_gev: Mapped[float | None] = mapped_column(Float)
    energy_min_gev: Mapped[float | None] = mapped_column(Float)
    energy_max_gev: Mapped[float | None] = mapped_column(Float)
    data_rights: Mapped[str] = mapped_column(String(16))
    embargo_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pipeline: Mapped[str | None] = mapped_column(String(256))
    pipeline_version: Mapped[str | None] = mapped_column(String(128))
    reco_method: Mapped[str | None] = mapped_column(String(256))
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_payloads.sha256"))
    content_sha256: Mapped[str | None] = mapped_column(
        String(64), doc="SHA-256 of the normalized document without its receipt fields: the "
                        "same alert in another encoding or from another transport hashes "
                        "the same.")
    transport: Mapped[dict[str, Any] | None] = mapped_column(
        Json, doc="Where the raw bytes came from: Kafka topic/partition/offset, VTP peer, file.")
    document: Mapped[dict[str, Any]] = mapped_column(Json, doc="The Alert as the schema has it.")
    # No foreign key: tokens are revoked, never deleted, and the id is a record, not a join.
    token_id: Mapped[int | None] = mapped_column(
        Integer, doc="The API token that wrote this revision (HTTP triggers); NULL otherwise.")
    matched_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="When the cross-match engine had processed this revision.")
    match_seq: Mapped[int | None] = mapped_column(
        BigInteger,
        doc="Order in which the match stage processed it (None: not by the match stage).")


class SkymapFetch(Base):
    """A sky map an alert names by URL, to be fetched (issue 16, item 2).

    Queued in the transaction that archives the alert (one row per alert revision),
    taken by the fetch workers of any process (:mod:`broker.runtime.mapfetch`), which
    lease a row while they fetch it as the outbox's senders lease deliveries.  The map
    itself goes to ``skymaps`` (once per SHA-256), the alert's localization becomes it.
    """

    __tablename__ = "skymap_fetches"
    __table_args__ = (Index(None, "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), unique=True)
    url: Mapped[str] = mapped_column(String(1024), doc="As the alert names it.")
    state: Mapped[str] = mapped_column(
        String(16), doc="pending (due at next_attempt_at), fetched or failed (for good)")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(
        UTCDateTime, doc="When it is due: its first attempt, a retry after back-off, or the "
                         "end of a worker's lease.")
    last_error: Mapped[str | None] = mapped_column(Text)
    skymap_sha256: Mapped[str | None] = mapped_column(String(64), doc="The map, once fetched.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CoincidenceRow(Base):
    """One coincidence revision found by the cross-match engine."""

    __tablename__ = "coincidences"
    __table_args__ = (Index(None, "created_at"), Index(None, "pairing", "created_at"),
                      Index(None, "hpx29"), Index(None, "reference_time"))

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    ivorn: Mapped[str] = mapped_column(String(512), unique=True)
    result_key: Mapped[str] = mapped_column(
        String(64), unique=True,
        doc="SHA-256 of (member ids, member revisions, config hash): one row per result.")
    pairing: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), doc="new, updated or retracted")
    revision: Mapped[int] = mapped_column(Integer)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("coincidences.id"))
    reference_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    hpx29: Mapped[int | None] = mapped_column(BigInteger)
    overlap: Mapped[float | None] = mapped_column(Float, doc="I = 4 pi * integral p1 p2 dOmega")
    far_hz: Mapped[float | None] = mapped_column(
        Float, doc="Smallest false-alarm rate among the significance figures in Hz.")
    engine_version: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Json)


class CoincidenceMember(Base):
    """An alert revision taking part in a coincidence revision."""

    __tablename__ = "coincidence_members"
    __table_args__ = (Index(None, "alert_id"),)

    coincidence_id: Mapped[int] = mapped_column(
        ForeignKey("coincidences.id", ondelete="CASCADE"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    time_offset_s: Mapped[float] = mapped_column(Float)


class VOEventRow(Base):
    """A VOEvent this broker issued, byte for byte as it is sent."""

    __tablename__ = "voevents"
    __table_args__ = (Index(None, "created_at"), Index(None, "alert_id"),
                      Index(None, "coincidence_id"))

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    ivorn: Mapped[str] = mapped_column(String(512), unique=True)
    xml: Mapped[bytes] = mapped_column(Blob)
    sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"))
    coincidence_id: Mapped[int | None] = mapped_column(ForeignKey("coincidences.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VOEventCitation(Base):
    """One ``Citations/EventIVORN`` of a VOEvent this broker issued."""

    __tablename__ = "voevent_citations"
    __table_args__ = (Index(None, "cited_ivorn"),)

    voevent_id: Mapped[int] = mapped_column(
        ForeignKey("voevents.id", ondelete="CASCADE"), primary_key=True)
    cited_ivorn: Mapped[str] = mapped_column(String(512), primary_key=True)
    cite: Mapped[str] = mapped_column(String(16), doc="followup, supersedes or retraction")


class Delivery(Base):
    """The outbox: one row per (VOEvent, target), queued in the VOEvent's transaction."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("voevent_id", "target"),
                      Index(None, "state", "next_attempt_at"),
                      Index(None, "state", "held_until"))

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    voevent_id: Mapped[int] = mapped_column(ForeignKey("voevents.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(64), doc="vtp, kafka-xml, kafka-json, ...")
    state: Mapped[str] = mapped_column(
        String(16), doc="pending, sent, failed, held (its subject is not public yet) or "
                        "withdrawn (retracted or superseded before it was released: never sent)")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    held_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="When a held delivery becomes due (the embargo's end, UTC); None on a "
                         "held row: never (a proprietary subject, at a public target).")
    released_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="When a held delivery was released (made pending), UTC.")


class ProvenanceDoc(Base):
    """A W3C PROV document (PROV-JSON) describing how a VOEvent came to be."""

    __tablename__ = "provenance"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    subject_ivorn: Mapped[str] = mapped_column(String(512), unique=True)
    voevent_id: Mapped[int | None] = mapped_column(ForeignKey("voevents.id"))
    document: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuarantineEntry(Base):
    """Raw input that could not become an Alert, with the reason, kept for inspection."""

    __tablename__ = "quarantine"
    __table_args__ = (Index(None, "received_at"), Index(None, "source"),
                      Index(None, "refusal_sha256", unique=True))

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    error_class: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_payloads.sha256"))
    transport: Mapped[dict[str, Any] | None] = mapped_column(Json)
    truncated: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="True when the payload was over the size limit and only "
                                    "its head is kept.")
    refusal_sha256: Mapped[str] = mapped_column(
        String(64), doc="SHA-256 of source, raw payload hash and reason: one row per refusal, "
                        "however often the message is replayed (issue 16, item 11).")


class IngestInflight(Base):
    """A message some process is normalizing: marked with the raw bytes, cleared with the
    results (issue 14, item 5).

    A mark whose owner died is how a restart recognizes a message that may have
    killed it (see :mod:`broker.runtime.ingest`).  ``owner`` names the process:
    ``host:boot id:pid:start ticks``.
    """

    __tablename__ = "ingest_inflight"
    __table_args__ = (Index(None, "owner"),)

    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_payloads.sha256"),
                                            primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(256))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    transport: Mapped[dict[str, Any] | None] = mapped_column(Json)
    full_size: Mapped[int | None] = mapped_column(BigInteger, doc="Set when truncated.")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StreamHealth(Base):
    """Liveness of each input stream, and of each detector that sends heartbeats on it.

    ``detector`` is ``""`` for the stream as a whole.  Updated in the same
    transaction as the messages it counts.
    """

    __tablename__ = "stream_health"

    stream: Mapped[str] = mapped_column(String(256), primary_key=True)
    detector: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    messages_total: Mapped[int] = mapped_column(BigInteger, default=0)
    quarantined_total: Mapped[int] = mapped_column(BigInteger, default=0)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="The newest heartbeat's own timestamp.")
    heartbeat_status: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    connected: Mapped[bool | None] = mapped_column(
        Boolean, doc="Whether the listener holds a connection (None: never reported).")
    connection_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token for the HTTP API, stored only as its SHA-256."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(256), doc="Space-separated scopes.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detectors: Mapped[list[str] | None] = mapped_column(
        Json, doc="Detectors a write:triggers token may write (JSON list); NULL: unbound.")


class BrokerKey(Base):
    """A secret key of this archive, shared by every process that serves it (e.g. the
    key that seals page cursors, so any API replica opens what another issued)."""

    __tablename__ = "broker_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(Blob)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Acknowledgement(Base):
    """A shifter's acknowledgement of a significant coincidence: who and when."""

    __tablename__ = "acknowledgements"
    __table_args__ = (Index(None, "coincidence_id"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    coincidence_id: Mapped[int] = mapped_column(
        ForeignKey("coincidences.id", ondelete="CASCADE"))
    acked_by: Mapped[str] = mapped_column(String(128), doc="The token's name.")
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"))
    acked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)


class TapJob(Base):
    """An asynchronous TAP query (UWS 1.1 job, ``/tap/async``), owned by its creator.

    It runs with its creator's data rights (the scopes of ``token_id``, checked
    still valid when it runs; none for an anonymous job) and only its owner
    reads it.  Deleted at ``destruction``.
    """

    __tablename__ = "tap_jobs"
    __table_args__ = (Index(None, "owner", "created_at"), Index(None, "destruction"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True,
                                    doc="Random, unguessable: the job's URL is its capability.")
    owner: Mapped[str] = mapped_column(String(64), doc="token:<id> or anonymous.")
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"))
    scopes: Mapped[str] = mapped_column(String(256), doc="The creator's scopes (space-separated).")
    phase: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(128))
    parameters: Mapped[dict[str, str]] = mapped_column(Json)
    base_url: Mapped[str] = mapped_column(String(512), doc="The service URL it was created at.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    execution_duration_s: Mapped[int] = mapped_column(Integer)
    destruction: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[bytes | None] = mapped_column(Blob)
    result_type: Mapped[str | None] = mapped_column(String(64))

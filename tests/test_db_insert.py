"""``insert_ignoring_conflicts`` hands rows to the driver itself (issue 17, item 1): what it
stores must be what SQLAlchemy's own ``INSERT ... ON CONFLICT DO NOTHING`` stores, value for
value, on both backends; its errors must be SQLAlchemy's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from alerts_schema import Alert
from alerts_schema.synthetic import alert_documents
from broker.archive.db import insert_ignoring_conflicts, transaction
from broker.archive.models import (
    AlertRow,
    Delivery,
    IngestInflight,
    ProvenanceDoc,
    QuarantineEntry,
    RawPayload,
    VOEventRow,
)
from broker.archive.store import Archive, alert_row_values, with_receipt
from listeners.envelope import RawMessage

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC)


def _rows() -> dict[Table, list[dict[str, Any]]]:
    """One row per table, covering each column type the archive uses (bytes, text, JSON,
    UTC times, floats, booleans, None)."""
    doc = alert_documents(1, seed=7)[0]
    raw = RawMessage("file", b'{"a": 1}', received_at=NOW, transport={"file": {"path": "x"}})
    alert = with_receipt(Alert.model_validate(doc), raw)
    values = alert_row_values(alert, raw)
    values["hpx29"] = 12345
    return {
        RawPayload.__table__: [{"sha256": raw.sha256, "data": b"\x00\xffbytes", "size_bytes": 7,
                                "source": "file", "first_received_at": NOW}],
        IngestInflight.__table__: [{"raw_sha256": raw.sha256, "owner": "h:b:1:2",
                                    "source": "file", "received_at": NOW,
                                    "transport": {"http": {"client": "127.0.0.1"}},
                                    "full_size": None, "started_at": NOW}],
        AlertRow.__table__: [values],
        QuarantineEntry.__table__: [{"source": "file", "reason": "bad ünïcode \u2603",
                                     "error_class": "InputError", "received_at": NOW,
                                     "raw_sha256": raw.sha256, "transport": None,
                                     "truncated": True, "refusal_sha256": "f" * 64}],
        VOEventRow.__table__: [{"ivorn": "ivo://test/x#1", "xml": b"<x/>", "sha256": "a" * 64,
                                "role": "test", "alert_id": None, "coincidence_id": None,
                                "created_at": NOW}],
    }


def _stored(archive: Archive, table: Table) -> list[tuple[Any, ...]]:
    """The table's rows as the driver reads them back (no SQLAlchemy result processing),
    without the generated id."""
    columns = [c.name for c in table.columns if c.name != "id"]
    with transaction(archive.engine, readonly=True) as conn:
        rows = conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table.name}").all()
    return [tuple(r) for r in rows]


def test_stores_what_sqlalchemy_stores(archive: Archive) -> None:
    dialect = sqlite if archive.engine.dialect.name == "sqlite" else postgresql
    for table, rows in _rows().items():
        with transaction(archive.engine) as conn:
            conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)
        theirs = _stored(archive, table)
        with transaction(archive.engine) as conn:
            conn.execute(delete(table))
            insert_ignoring_conflicts(conn, table, rows)
        assert _stored(archive, table) == theirs, table.name


def test_returning_gives_the_inserted_rows_only_in_order(archive: Archive) -> None:
    table = RawPayload.__table__
    rows = [{"sha256": f"{i:064x}", "data": b"x", "size_bytes": 1, "source": "file",
             "first_received_at": NOW} for i in range(5)]
    with transaction(archive.engine) as conn:
        first = insert_ignoring_conflicts(conn, table, rows[:3], returning=("sha256",))
        again = insert_ignoring_conflicts(conn, table, rows, returning=("sha256", "size_bytes"))
    assert [tuple(r) for r in first] == [(f"{i:064x}",) for i in range(3)]
    assert [tuple(r) for r in again] == [(f"{i:064x}", 1) for i in (3, 4)]
    with transaction(archive.engine) as conn:
        assert insert_ignoring_conflicts(conn, table, rows) == []  # all there: nothing new


def test_returning_over_many_statements(archive: Archive) -> None:
    """SQLite inserts up to 500 rows per multi-row statement: a batch over that comes back
    whole, each inserted row once."""
    table = RawPayload.__table__
    rows = [{"sha256": f"{i:064x}", "data": b"x", "size_bytes": 1, "source": "file",
             "first_received_at": NOW} for i in range(1203)]
    with transaction(archive.engine) as conn:
        insert_ignoring_conflicts(conn, table, rows[500:510])
        found = insert_ignoring_conflicts(conn, table, rows, returning=("sha256",))
    assert sorted(r[0] for r in found) == sorted(
        r["sha256"] for i, r in enumerate(rows) if not 500 <= i < 510)


def test_a_missing_column_takes_its_scalar_default(archive: Archive) -> None:
    with transaction(archive.engine) as conn:
        (voevent_id,), = insert_ignoring_conflicts(conn, VOEventRow.__table__, [{
            "ivorn": "ivo://test/x#2", "xml": b"<x/>", "sha256": "b" * 64, "role": "test",
            "created_at": NOW}], returning=("id",))
        insert_ignoring_conflicts(conn, Delivery.__table__, [{
            "voevent_id": voevent_id, "target": "vtp", "state": "pending",
            "next_attempt_at": NOW + timedelta(seconds=1)}])  # no "attempts": default 0
    with transaction(archive.engine, readonly=True) as conn:
        row = conn.execute(select(Delivery.attempts, Delivery.next_attempt_at,
                                  Delivery.held_until)).one()
    assert row == (0, NOW + timedelta(seconds=1), None)


def test_unknown_keys_are_refused_before_anything_is_sent(archive: Archive) -> None:
    with pytest.raises(ValueError, match="no column"), \
            transaction(archive.engine) as conn:
        insert_ignoring_conflicts(conn, ProvenanceDoc.__table__, [{"subject": "x"}])


def test_driver_errors_are_sqlalchemy_errors(archive: Archive) -> None:
    # An in-flight mark of bytes never stored breaks its foreign key: the ingest's
    # one-by-one fallback and the retry logic catch SQLAlchemy's errors, not the driver's.
    with pytest.raises(IntegrityError), transaction(archive.engine) as conn:
        insert_ignoring_conflicts(conn, IngestInflight.__table__, [{
            "raw_sha256": "0" * 64, "owner": "o", "source": "file", "received_at": NOW,
            "transport": None, "full_size": None, "started_at": NOW}])

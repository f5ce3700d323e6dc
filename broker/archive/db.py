"""Engines and sessions for the archive, the same on SQLite and PostgreSQL.

SQLite is the embedded default: WAL journal so readers never block the
writer, ``BEGIN IMMEDIATE`` so two writing processes queue on the lock instead
of failing when a read transaction tries to become a write, and a generous
busy timeout.  PostgreSQL gets pre-ping so a restarted server is reconnected
to transparently, and custom plans for every statement (see
``_postgresql_on_connect``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.types import TypeDecorator

from alerts_schema.errors import ArchiveUnavailable

SQLITE_BUSY_TIMEOUT_S = 60.0
SQLITE_MMAP_BYTES = 1 << 30
"""Most of a SQLite archive read through a memory map (address space, not memory)."""
_PG_DIALECT = postgresql.dialect()


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime stored as a naive UTC timestamp.

    Both backends then compare and index times the same way; Python code only
    ever sees aware UTC datetimes.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the archive; use UTC-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; a SQLite file's folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None,
                          "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _postgresql_on_connect)
    return engine


def _postgresql_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # psycopg prepares a statement after five runs and PostgreSQL then settles
    # on one generic plan for every parameter set: a cone query's plan depends
    # on how much sky and time it covers, and the shared plan made a 0.5 deg x
    # 30 day cone 4x slower (bench/RESULTS.md, measured by turning preparing off
    # with prepare_threshold=None).  Custom plans keep the prepared statements (and
    # their saved parse) for the ingest inserts.  Committed, so the pool's
    # rollback on check-in does not undo it.
    cur = dbapi_conn.cursor()
    cur.execute("SET plan_cache_mode = force_custom_plan")
    cur.close()
    dbapi_conn.commit()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    # Reads through the OS page cache without copying each page into SQLite's
    # own cache (which holds only a few MB by default), for long time-ordered
    # walks over a large archive (one of five query-path changes measured
    # together in bench/RESULTS.md, not apart).
    cur.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling is off (isolation_level=None), so the
    # BEGIN is ours: IMMEDIATE takes the write lock up front, which makes
    # concurrent writers wait (busy_timeout) instead of failing on upgrade.
    mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
    conn.exec_driver_sql(f"BEGIN {mode}")


_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_guard = threading.Lock()


def _sqlite_writer(engine: Engine) -> threading.RLock:
    """The lock this process's writers of one SQLite database take before ``BEGIN
    IMMEDIATE`` (one per database file, whichever engine opens it).

    SQLite lets one writer in at a time and makes the others wait in its busy handler,
    which sleeps 1, 2, 5, 10, 15, 20, 25, ... 100 ms between tries however soon the lock
    is free: threads of one process contending for it (request threads, the pipeline,
    the delivery loops) each slept milliseconds to tens of milliseconds per write, which
    was most of a trigger's latency under load (py-spy of ``serve`` during ``python -m
    bench publish``: 23% of its busy samples were in ``BEGIN IMMEDIATE``).  Queued on a
    lock, the next writer starts the moment the last one commits.  Other processes still
    wait in the busy handler.
    """
    key = str(engine.url.database)
    with _sqlite_writers_guard:
        lock = _sqlite_writers.get(key)
        if lock is None:
            lock = _sqlite_writers[key] = threading.RLock()
        return lock


@contextmanager
def transaction(engine: Engine, *, readonly: bool = False) -> Iterator[Connection]:
    """A connection in a transaction that commits on success and rolls back on error.

    Connection failures surface as :class:`~alerts_schema.errors.ArchiveUnavailable`
    so callers can tell them from bad input.  On SQLite a writing transaction first
    takes the process's writer lock of the database (:func:`_sqlite_writer`).
    """
    writer = _sqlite_writer(engine) if not readonly and is_sqlite(engine) else None
    if writer is not None and not writer.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
        raise ArchiveUnavailable(f"archive unavailable: no write turn on {engine.url.database} "
                                 f"within {SQLITE_BUSY_TIMEOUT_S:g} s")
    try:
        with engine.connect() as conn:
            if readonly:
                conn = conn.execution_options(readonly=True)
            with conn.begin():
                yield conn
    except (OperationalError, DBAPIError) as exc:
        if getattr(exc, "connection_invalidated", False) or _is_transient(exc):
            raise ArchiveUnavailable(f"archive unavailable: {exc.orig}") from exc
        raise
    finally:
        if writer is not None:
            writer.release()


_TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


def _is_transient(exc: DBAPIError) -> bool:
    """Serialization failures, deadlocks, shutdowns and lost connections: worth retrying."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)


def insert_ignoring_conflicts(conn: Connection, table: Table, rows: Sequence[dict[str, Any]],
                              *, returning: Sequence[str] = ()) -> list[Any]:
    """``INSERT ... ON CONFLICT DO NOTHING`` of many rows; the RETURNING rows of those inserted.

    On PostgreSQL the rows go through psycopg's pipelined ``executemany``
    with one short prepared statement: SQLAlchemy's multi-row ``VALUES``
    statement is re-split by psycopg on every batch (it is too long to cache),
    which cost 90% of the insert time here (1,500 against 13,000 rows/s).
    SQLite takes SQLAlchemy's own executemany, which is fast there.
    """
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
        if returning:
            returning_stmt = stmt.returning(*(table.c[name] for name in returning))
            return list(conn.execute(returning_stmt, list(rows)))
        conn.execute(stmt, list(rows))
        return []
    # psycopg (about 0.2 s to import) is loaded by the engine of a PostgreSQL archive only:
    # deferred to here so that a process on a SQLite archive never imports it.
    from psycopg.types.json import Jsonb

    columns = [c for c in table.columns if c.name in rows[0]]
    convert = [_pg_converter(c.type, Jsonb) for c in columns]
    names = ", ".join(c.name for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(returning)
    params = [[fn(row[c.name]) for c, fn in zip(columns, convert, strict=True)] for row in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, params, returning=bool(returning))
        found: list[Any] = []
        if returning:
            while True:
                found.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        return found
    except Exception as exc:
        import psycopg  # deferred: see Jsonb above

        if isinstance(exc, psycopg.Error):
            # Surface driver errors as SQLAlchemy's (with a lost connection marked
            # invalidated, hence retryable), as every other statement does.
            dbapi = conn.dialect.loaded_dbapi
            raise DBAPIError.instance(
                sql, None, exc, dbapi.Error, dialect=conn.dialect,
                # SQLAlchemy types the error as its own nominal DBAPIModule.Error class,
                # which no driver's exception subclasses: psycopg.Error is a PEP 249 Error.
                connection_invalidated=conn.dialect.is_disconnect(
                    exc, conn.connection.dbapi_connection, cursor)) from exc  # type: ignore[arg-type]
        raise
    finally:
        cursor.close()


def _pg_converter(sqltype: Any, jsonb: Any) -> Any:
    """The bind conversion SQLAlchemy would apply to a column, for the raw driver."""
    base = sqltype.load_dialect_impl(_PG_DIALECT) if hasattr(sqltype, "load_dialect_impl") \
        else sqltype
    if isinstance(sqltype, UTCDateTime):
        return lambda v: sqltype.process_bind_param(v, _PG_DIALECT)
    if isinstance(base, JSON) or isinstance(sqltype, JSON):
        return lambda v: None if v is None else jsonb(v)
    return lambda v: v

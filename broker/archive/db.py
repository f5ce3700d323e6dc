"""Engines and sessions for the archive, the same on SQLite and PostgreSQL.

SQLite is the embedded default: WAL journal so readers never block the
writer, ``BEGIN IMMEDIATE`` so two writing processes queue on the lock instead
of failing when a read transaction tries to become a write, and a generous
busy timeout.  PostgreSQL gets pre-ping so a restarted server is reconnected
to transparently, and custom plans for every statement (see
``_postgresql_on_connect``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.schema import ScalarElementColumnDefault
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

    Every row has the keys of the first; a column missing from them takes its scalar
    ``default``, as SQLAlchemy's insert would.  The rows go to the driver with one
    short statement made once per table, keys and ``RETURNING`` (:func:`_insert_plan`),
    each value converted as SQLAlchemy binds it:

    * on PostgreSQL through psycopg's pipelined ``executemany``: SQLAlchemy's
      multi-row ``VALUES`` statement is re-split by psycopg on every batch (it is
      too long to cache), which cost 90% of the insert time here (1,500 against
      13,000 rows/s);
    * on SQLite through sqlite3's ``executemany``, or, when rows are returned (its
      ``executemany`` gives none back), one multi-row ``VALUES`` statement per 500 rows:
      building SQLAlchemy's statement and running it through its execution machinery
      cost about 0.25 ms per call, eight times the insert itself, and a trigger makes
      six (issue 17, item 1).

    Driver errors surface as SQLAlchemy's (a lost connection marked invalidated, hence
    retryable), as every other statement's do.
    """
    if not rows:
        return []
    plan = _insert_plan(conn.dialect, table, tuple(rows[0]), tuple(returning))
    params = [[fn(row[key] if key is not None else None) for key, fn in plan.binds]
              for row in rows]
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        found: list[Any] = []
        if not returning:
            cursor.executemany(plan.sql, params)
        elif conn.dialect.name == "postgresql":
            cursor.executemany(plan.sql, params, returning=True)
            while True:
                found.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        else:
            # One statement per row cost 15% more per row in a batch of 500.
            step = plan.rows_per_statement
            for start in range(0, len(params), step):
                chunk = params[start:start + step]
                found.extend(cursor.execute(
                    plan.many(len(chunk)),
                    [value for values in chunk for value in values]).fetchall())
        return found
    except dbapi.Error as exc:
        raise DBAPIError.instance(
            plan.sql, None, exc, dbapi.Error, dialect=conn.dialect,
            connection_invalidated=conn.dialect.is_disconnect(
                exc, conn.connection.dbapi_connection, cursor)) from exc
    finally:
        cursor.close()


@dataclass(frozen=True)
class _InsertPlan:
    """A table's ``INSERT ... ON CONFLICT DO NOTHING`` for the driver: per column the row
    key its value comes from (None: the column's default) and the conversion that binds
    it; the statement for one row and, on SQLite, for several (:meth:`many`)."""

    binds: tuple[tuple[str | None, Callable[[Any], Any]], ...]
    head: str  # INSERT INTO table (columns)
    row: str  # (?, ?, ...)
    tail: str  # RETURNING ..., or nothing

    @property
    def sql(self) -> str:
        return self.many(1)

    @property
    def rows_per_statement(self) -> int:
        """Rows per multi-row statement: within SQLite's 32,766 bound parameters."""
        return max(1, min(500, 32_000 // max(1, len(self.binds))))

    def many(self, n: int) -> str:
        """The statement inserting ``n`` rows at once."""
        return f"{self.head} VALUES {', '.join([self.row] * n)} ON CONFLICT DO NOTHING" \
            f"{self.tail}"


@functools.lru_cache(maxsize=256)
def _insert_plan(dialect: Dialect, table: Table, keys: tuple[str, ...],
                 returning: tuple[str, ...]) -> _InsertPlan:
    """The plan of inserting rows with ``keys`` into ``table``, made once per engine."""
    unknown = set(keys) - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    names: list[str] = []
    binds: list[tuple[str | None, Callable[[Any], Any]]] = []
    for column in table.columns:
        convert = _converter(dialect, column.type)
        if column.name in keys:
            binds.append((column.name, convert))
        elif column.default is not None:
            default = column.default
            if not isinstance(default, ScalarElementColumnDefault):
                raise ValueError(f"{table.name}.{column.name}: give its value (only a "
                                 "scalar default is filled in)")
            binds.append((None, functools.partial(_constant, convert(default.arg))))
        else:
            continue
        names.append(column.name)
    mark = "%s" if dialect.name == "postgresql" else "?"
    return _InsertPlan(
        tuple(binds), f"INSERT INTO {table.name} ({', '.join(names)})",
        f"({', '.join([mark] * len(names))})",
        " RETURNING " + ", ".join(table.c[name].name for name in returning)
        if returning else "")


def _constant(value: Any, _absent: None) -> Any:
    return value


def _converter(dialect: Dialect, sqltype: Any) -> Callable[[Any], Any]:
    """The bind conversion SQLAlchemy applies to a value of ``sqltype``, for the driver."""
    if dialect.name == "postgresql":
        return _pg_converter(sqltype)
    process = sqltype.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _pg_converter(sqltype: Any) -> Callable[[Any], Any]:
    """PostgreSQL's conversion: UTC times naive, JSON as psycopg's Jsonb."""
    base = sqltype.load_dialect_impl(_PG_DIALECT) if hasattr(sqltype, "load_dialect_impl") \
        else sqltype
    if isinstance(sqltype, UTCDateTime):
        return lambda v: sqltype.process_bind_param(v, _PG_DIALECT)
    if isinstance(base, JSON) or isinstance(sqltype, JSON):
        # psycopg (about 0.2 s to import) is loaded by the engine of a PostgreSQL archive
        # only: deferred to here so that a process on a SQLite archive never imports it.
        from psycopg.types.json import Jsonb

        return lambda v: None if v is None else Jsonb(v)
    return _same

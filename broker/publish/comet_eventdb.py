"""Comet's event database in SQLite: the same dedup, without rereading an index per event.

Comet (PyPI ``comet``) refuses a VOEvent it has seen before ("previously
seen"): :class:`comet.utility.event_db.Event_DB` keeps, per IVORN authority
and resource, the SHA-1 of every event's bytes with the time it came, and
forgets entries older than 30 days (``prune``, every 6 hours).  It stores them
with ``dbm``, opening the file for every event; where Python has neither
``dbm.gnu`` nor ``dbm.ndbm`` (the case of a Python built without them, as
here) that is ``dbm.dumb``, which reads its whole index at each open and
writes it back at each close: the cost of one event grows with the events
already seen, and Comet acknowledged about 13 VOEvents/s after a few thousand.

:class:`SQLiteEventDB` keeps the same facts in one SQLite file in the event
database folder (``events.sqlite3``), one row per (authority/resource, SHA-1),
written by one ``INSERT OR IGNORE`` per event on a connection opened once: an
event is new exactly when the insert adds a row, which is atomic across the
threads Comet checks events in and across processes sharing the folder.
Expiry is Comet's own rule (an entry goes once ``int(now - seen) >= expiry``
s).  WAL with ``synchronous=NORMAL``: what was acknowledged survives a kill of
the process (not a power cut, as with ``dbm``, which never syncs).

:func:`install` hands it to Comet; :mod:`broker.publish.comet_run` calls it
before Twisted builds Comet's services (setting ``comet_eventdb``).  Kept free
of the rest of :mod:`broker`: the standard library, Twisted and Comet only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

import comet.log
from comet.utility.event_db import Event_DB
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

FILENAME = "events.sqlite3"
"""The database file inside Comet's ``--eventdb`` folder."""

BUSY_TIMEOUT_S = 30.0
"""How long (s) a statement waits for another process holding the file's write lock."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    db_path TEXT NOT NULL,   -- Comet's per-database name: IVORN authority_resource
    key     TEXT NOT NULL,   -- SHA-1 (hex) of the event's bytes
    at      REAL NOT NULL,   -- when first seen, Unix time (s)
    PRIMARY KEY (db_path, key)
) WITHOUT ROWID
"""


class SQLiteEventDB(Event_DB):
    """Comet's :class:`~comet.utility.event_db.Event_DB` on one SQLite file.

    Parameters
    ----------
    root
        Comet's ``--eventdb`` folder; made if missing, refused if not a
        writable folder (Comet's own checks).
    """

    def __init__(self, root: str) -> None:
        self.root = self._ensure_dir(root)
        self.path = os.path.join(self.root, FILENAME)
        # Comet calls check_event from Twisted's thread pool: one connection, one lock (an
        # insert takes microseconds; connections per thread would only contend on the file).
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)

    def check_event(self, event: Any) -> bool:
        """True if ``event`` was not seen before (and is now recorded), else False.

        An event whose IVORN Comet cannot parse is refused, as Comet's own does.
        """
        try:
            db_path, key = self._get_event_details(event)
        except Exception:  # Comet's own catches everything here too
            comet.log.warn("Unparseable IVOID; failing eventdb lookup")
            return False
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO seen (db_path, key, at) VALUES (?, ?, ?)",
                (db_path, key, time.time()))
            return cursor.rowcount == 1

    def expire(self, expiry_time: float) -> int:
        """Forget entries at least ``expiry_time`` s old (Comet's rounding); how many went."""
        with self._lock:
            # CAST truncates toward zero like Python's int(): Comet's own comparison.
            removed: int = self._conn.execute(
                "DELETE FROM seen WHERE CAST(? - at AS INTEGER) >= ?",
                (time.time(), expiry_time)).rowcount
        comet.log.info(f"Expiring {removed} events from {self.path}")
        return removed

    def prune(self, expiry_time: float) -> Deferred:
        """:meth:`expire` in Twisted's thread pool, as Comet's ``LoopingCall`` expects."""
        return deferToThread(self.expire, expiry_time)

    def close(self) -> None:
        """Close the database file (Comet never does: its process ends)."""
        with self._lock:
            self._conn.close()


BACKENDS = ("sqlite", "dbm")
"""Values of the ``comet_eventdb`` setting: this module's database, or Comet's own."""


def install(backend: str) -> None:
    """Make Comet build its event database with ``backend`` (one of :data:`BACKENDS`);
    to be called before Twisted makes Comet's service (``dbm``: Comet as shipped)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Comet event database {backend!r}; one of {BACKENDS}")
    if backend == "sqlite":
        # Deferred to here: comet.service.broker imports twisted.internet.reactor, which
        # installs Twisted's default reactor; with "dbm" it is left for twistd to import
        # after it has installed the reactor its options name.
        import comet.service.broker

        # makeService looks the class up in its module when it runs.
        comet.service.broker.Event_DB = SQLiteEventDB

"""Comet's event database in SQLite (issue 17 item 4): Comet's own dedup and expiry, kept.

The database alone (Comet's own event documents): new once, refused after,
kept across reopening, Comet's expiry rule, many threads and connections at
once.  Then real Comet processes started by this project's launcher: the
"previously seen" refusal survives a restart of the Comet process on the same
event database; an entry past Comet's 30 days is pruned at its start; a stock
Comet subscriber gets each event exactly once, a copy sent again through a
Comet with an empty database included; the broker's Comet child runs on it.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from comet.utility.xml import xml_document

from broker.config import Settings
from broker.publish.comet_child import CometChild, eventdb
from broker.publish.comet_eventdb import FILENAME, SQLiteEventDB, install
from broker.publish.senders import DeliveryError, VTPSender
from tests.conftest import free_port
from tests.servers import comet_broker, comet_subscriber, saved_ivorns, wait_for

pytestmark = pytest.mark.timeout(120)
TEMPLATE = (Path(__file__).parent / "data" / "voevents" / "BAT_GRB_Pos_655721-214.xml"
            ).read_bytes()
THIRTY_ONE_DAYS_S = 31 * 86400


def voevent(n: int, *, resource: str = "eventdb", note: str = "") -> bytes:
    """A schema-valid VOEvent (a Swift-BAT notice) with its own IVORN; ``note`` changes the
    bytes, not the IVORN."""
    ivorn = f"ivo://test.mmbroker/{resource}#{n}"
    xml = re.sub(rb'ivorn="[^"]+"', f'ivorn="{ivorn}"'.encode(), TEMPLATE, count=1)
    return xml.replace(b"<Description>This VOEvent",
                       f"<Description>{note}This VOEvent".encode(), 1)


def seen_rows(root: Path) -> list[tuple[str, str, float]]:
    with sqlite3.connect(root / FILENAME) as conn:
        return conn.execute("SELECT db_path, key, at FROM seen ORDER BY at").fetchall()


def age_all(root: Path, seconds: float) -> None:
    """Move every entry ``seconds`` into the past: time passing, for Comet's expiry."""
    with sqlite3.connect(root / FILENAME) as conn:
        conn.execute("UPDATE seen SET at = at - ?", (seconds,))


# -- the database alone ------------------------------------------------------------------


def test_new_once_then_refused_and_kept_across_reopening(tmp_path: Path) -> None:
    db = SQLiteEventDB(str(tmp_path / "db"))
    first, other = xml_document(voevent(1)), xml_document(voevent(2))
    assert db.check_event(first) is True
    assert db.check_event(xml_document(voevent(1))) is False  # the same bytes again
    assert db.check_event(other) is True
    # Comet keys on the bytes: a different document under the same IVORN is new to it.
    assert db.check_event(xml_document(voevent(1, note="revised "))) is True
    # Per authority and resource, as Comet's per-file databases.
    assert db.check_event(xml_document(voevent(1, resource="elsewhere"))) is True
    db.close()
    again = SQLiteEventDB(str(tmp_path / "db"))
    assert again.check_event(xml_document(voevent(1))) is False
    assert again.check_event(xml_document(voevent(3))) is True
    # Comet's own names (its os.path.join drops the authority before a resource's "/").
    assert {r[0] for r in seen_rows(tmp_path / "db")} == {"_eventdb", "_elsewhere"}
    again.close()


def test_unparseable_ivorn_is_refused_as_comet_does(tmp_path: Path) -> None:
    db = SQLiteEventDB(str(tmp_path))
    bad = re.sub(rb'ivorn="[^"]+"', b'ivorn="not an ivorn"', TEMPLATE, count=1)
    assert db.check_event(xml_document(bad)) is False
    assert seen_rows(tmp_path) == []
    db.close()


def test_expiry_follows_comets_rule(tmp_path: Path) -> None:
    db = SQLiteEventDB(str(tmp_path))
    assert db.check_event(xml_document(voevent(1)))
    assert db.expire(3600) == 0  # seen just now: kept
    age_all(tmp_path, 3599.5)
    assert db.expire(3600) == 0  # int(3599.5 s) < 3600 s: Comet keeps it too
    age_all(tmp_path, 1.0)
    assert db.check_event(xml_document(voevent(2)))
    assert db.expire(3600) == 1  # the old one goes, the new one stays
    assert db.check_event(xml_document(voevent(1))) is True  # forgotten: new again
    assert db.check_event(xml_document(voevent(2))) is False
    assert db.expire(0) == 2  # Comet's prune(0) empties the database
    db.close()


def test_many_threads_and_connections_see_each_event_new_once(tmp_path: Path) -> None:
    # Twisted's thread pool calls check_event concurrently; two databases on one folder
    # stand for two processes sharing it (separate connections, SQLite's file locks).
    dbs = [SQLiteEventDB(str(tmp_path)), SQLiteEventDB(str(tmp_path))]
    events = [voevent(n) for n in range(200)]
    new: list[bytes] = []
    lock = threading.Lock()

    def check(db: SQLiteEventDB, offset: int) -> None:
        for k in range(len(events)):
            raw = events[(k + offset) % len(events)]
            if db.check_event(xml_document(raw)):
                with lock:
                    new.append(raw)

    threads = [threading.Thread(target=check, args=(dbs[i % 2], 37 * i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(new) == sorted(events)  # every event new exactly once
    assert len(seen_rows(tmp_path)) == len(events)
    for db in dbs:
        db.close()


def test_install_refuses_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown Comet event database"):
        install("lmdb")


def test_the_launcher_refuses_an_unknown_backend(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "broker.publish.comet_run",
                           "--eventdb-backend=lmdb", "-n", "comet"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and "one of sqlite, dbm" in proc.stderr


# -- real Comet processes ------------------------------------------------------------------


def test_dedup_survives_a_restart_of_comet(tmp_path: Path) -> None:
    with comet_broker(tmp_path) as (receive, broadcast):
        sender = VTPSender("127.0.0.1", receive)
        sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
        with pytest.raises(DeliveryError, match="nak"):
            sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
    root = tmp_path / f"comet-eventdb-{broadcast}"
    assert len(seen_rows(root)) == 1  # in our database, not in a dbm file beside it
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(FILENAME)) == []
    with comet_broker(tmp_path, receive_port=receive, broadcast_port=broadcast):
        with pytest.raises(DeliveryError, match="nak"):
            sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
        sender.send("ivo://test.mmbroker/eventdb#2", voevent(2))
    assert len(seen_rows(root)) == 2


def test_comet_prunes_entries_past_its_30_days_at_start(tmp_path: Path) -> None:
    with comet_broker(tmp_path) as (receive, broadcast):
        sender = VTPSender("127.0.0.1", receive)
        sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
    root = tmp_path / f"comet-eventdb-{broadcast}"
    age_all(root, THIRTY_ONE_DAYS_S)
    with comet_broker(tmp_path, receive_port=receive, broadcast_port=broadcast):
        # Comet prunes when it starts (then every 6 hours): forgotten, so accepted again.
        assert wait_for(lambda: seen_rows(root) == [], 20)
        sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
    assert len(seen_rows(root)) == 1


def test_a_stock_subscriber_gets_each_event_exactly_once(tmp_path: Path) -> None:
    n = 50
    ivorns = [f"ivo://test.mmbroker/eventdb#{i}" for i in range(n)]
    probes = iter(range(1000, 2000))
    with comet_subscriber(tmp_path, broadcast := free_port()) as saved:
        with comet_broker(tmp_path, broadcast_port=broadcast) as (receive, _):
            sender = VTPSender("127.0.0.1", receive)
            _until_subscribed(sender, saved, probes)
            for i in range(n):
                sender.send(ivorns[i], voevent(i))
            with pytest.raises(DeliveryError, match="nak"):  # refused by the broker
                sender.send(ivorns[0], voevent(0))
            assert wait_for(lambda: len(_ours(saved)) >= n, 30)
        # As the Comet child restarts: an empty database, the same bytes sent again. The
        # broker passes them on; the subscriber's own database drops the copies.
        for stale in (tmp_path / f"comet-eventdb-{broadcast}").iterdir():
            stale.unlink()
        with comet_broker(tmp_path, broadcast_port=broadcast) as (receive, _):
            sender = VTPSender("127.0.0.1", receive)
            _until_subscribed(sender, saved, probes)
            for i in range(0, n, 5):
                sender.send(ivorns[i], voevent(i))
            sender.send(f"ivo://test.mmbroker/eventdb#{n}", voevent(n))
            assert wait_for(lambda: len(_ours(saved)) >= n + 1, 30)
            time.sleep(1)  # a copy would be saved by now
    assert sorted(_ours(saved)) == sorted([*ivorns, f"ivo://test.mmbroker/eventdb#{n}"])


def _ours(saved: Path) -> list[str]:
    """What the subscriber saved, probes left out (repeats kept)."""
    return [i for i in saved_ivorns(saved) if "/probe#" not in i]


def _until_subscribed(sender: VTPSender, saved: Path, probes: Iterator[int]) -> None:
    """Send probe events (each new) until the subscriber saves one: it is connected then
    (a stock subscriber retries 1 s after a refused connection, then later)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        k = next(probes)
        sender.send(f"ivo://test.mmbroker/probe#{k}", voevent(k, resource="probe"))
        if wait_for(lambda k=k: f"ivo://test.mmbroker/probe#{k}" in saved_ivorns(saved), 0.5,
                    0.05):
            return
    raise AssertionError("the subscriber did not connect in 30 s")


def test_the_dbm_backend_is_comets_own(tmp_path: Path) -> None:
    with comet_broker(tmp_path, eventdb_backend="dbm") as (receive, broadcast):
        sender = VTPSender("127.0.0.1", receive)
        sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
        with pytest.raises(DeliveryError, match="nak"):
            sender.send("ivo://test.mmbroker/eventdb#1", voevent(1))
    root = tmp_path / f"comet-eventdb-{broadcast}"
    assert not (root / FILENAME).exists() and any(root.iterdir())


def test_the_comet_child_runs_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vtp_receive_port=free_port(),
                        vtp_broadcast_port=free_port())
    child = CometChild(settings)
    try:
        child.start()
        VTPSender("127.0.0.1", settings.vtp_receive_port).send(
            "ivo://test.mmbroker/eventdb#1", voevent(1))
        assert len(seen_rows(eventdb(settings))) == 1
    finally:
        child.stop()

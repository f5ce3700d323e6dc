"""The VTP transport against a real Comet broker."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from broker.archive.store import Archive
from broker.runtime.ingest import Ingestor
from listeners.vtp import VTPSubscriber
from listeners.vtp_protocol import frame, read_frame, transport
from tests.servers import comet_broker, comet_send, wait_for

pytestmark = pytest.mark.timeout(180)
DATA = Path(__file__).parent / "data" / "voevents"


def _voevent(n: int) -> bytes:
    """A distinct, schema-valid VOEvent 2.0 built from a shipped sample."""
    template = (DATA / "BAT_GRB_Pos_655721-214.xml").read_bytes()
    return re.sub(rb'ivorn="([^"#]+)#([^"]+)"', rb'ivorn="\1#mmbtest-' + str(n).encode() + b'"',
                  template, count=1).replace(b"<Param name=\"TrigID\" value=\"",
                                             b"<Param name=\"TrigID\" value=\"9" +
                                             str(n).encode(), 1)


@pytest.fixture
def subscriber_for(ingestor: Ingestor):
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(port: int) -> VTPSubscriber:
        sub = VTPSubscriber("127.0.0.1", port, ingestor, local_ivo="ivo://test.mmbroker/sub")
        stop = threading.Event()
        thread = threading.Thread(target=sub.run, args=(stop,), daemon=True)
        thread.start()
        running.append((thread, stop))
        assert sub.connected.wait(20), "subscriber did not connect"
        return sub

    yield start
    for thread, stop in running:
        stop.set()
        thread.join(10)


def test_voevents_from_comet_are_archived(tmp_path: Path, archive: Archive,
                                          subscriber_for) -> None:
    with comet_broker(tmp_path) as (receive, broadcast):
        sub = subscriber_for(broadcast)
        for n in range(3):
            comet_send(receive, _voevent(n))
        assert wait_for(lambda: archive.count_alerts() == 3, 30)
    docs = archive.list_alerts(__import__("broker.archive.store", fromlist=["AlertQuery"])
                               .AlertQuery(limit=10))
    assert {d["source"] for d in docs} == {"ivo://nasa.gsfc.gcn/SWIFT"}
    assert all(d["source_ivorn"].endswith(tuple(f"#mmbtest-{n}" for n in range(3)))
               for d in docs)
    assert sub.events == 3
    health = {h["stream"] for h in archive.stream_health()}
    assert f"vtp:127.0.0.1:{broadcast}" in health  # liveness is per peer


def test_subscriber_reconnects_after_the_peer_restarts(tmp_path: Path, archive: Archive,
                                                       subscriber_for) -> None:
    with comet_broker(tmp_path) as (receive, broadcast):
        sub = subscriber_for(broadcast)
        comet_send(receive, _voevent(10))
        assert wait_for(lambda: archive.count_alerts() == 1, 30)
    assert wait_for(lambda: not sub.connected.is_set(), 10)
    with comet_broker(tmp_path, receive_port=receive, broadcast_port=broadcast):
        assert wait_for(sub.connected.is_set, 40), "no reconnect after the restart"
        comet_send(receive, _voevent(11))
        assert wait_for(lambda: archive.count_alerts() == 2, 30)
    assert sub.connections >= 2


def _fake_peer(frames: list[bytes]) -> tuple[int, threading.Thread, list[bytes]]:
    """A one-connection VTP 'broker' that sends ``frames`` and records the replies."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    replies: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(0.5)
        with conn, server:
            for payload in frames:
                conn.sendall(payload)
                try:
                    replies.append(read_frame(conn, max_bytes=1 << 20,
                                              keep_going=lambda: True))
                except (ConnectionError, TimeoutError):
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread, replies


def test_hostile_frames_are_quarantined_and_answered(archive: Archive,
                                                     subscriber_for) -> None:
    laughs = (b'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
              b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://x/y#1"'
              b' role="test" version="2.0">&b;</voe:VOEvent>')
    alive = transport("iamalive", origin="ivo://test.mmbroker/peer")
    port, thread, replies = _fake_peer([frame(alive), frame(laughs), frame(b"\xff\xfe junk"),
                                        frame(b"x" * 10)[:4] + b"x" * 10])
    subscriber_for(port)
    thread.join(20)
    assert wait_for(lambda: archive.count_quarantined() == 3, 20)
    roles = [re.search(rb'role="(\w+)"', r).group(1) for r in replies]
    assert roles[:3] == [b"iamalive", b"ack", b"ack"]
    reasons = " ".join(q["reason"] for q in archive.list_quarantine())
    assert "entit" in reasons.lower()


def test_oversize_frame_is_quarantined_and_the_connection_dropped(
        archive: Archive, ingestor: Ingestor) -> None:
    big = 2 << 20
    port, _, _ = _fake_peer([big.to_bytes(4, "big") + b"<" * (1 << 20) + b"<" * 1024])
    sub = VTPSubscriber("127.0.0.1", port, ingestor, local_ivo="ivo://test.mmbroker/sub",
                        max_frame_bytes=1 << 20)
    stop = threading.Event()
    worker = threading.Thread(target=sub.run, args=(stop,), daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: archive.count_quarantined() == 1, 20)
    finally:
        stop.set()
        worker.join(10)
    (entry,) = archive.list_quarantine()
    assert entry["truncated"] and "exceeds" in entry["reason"]


def test_event_is_held_through_an_archive_outage(archive: Archive, ingestor: Ingestor,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """VTP has no replay: an event arriving while the archive is down waits, then lands."""
    from alerts_schema.errors import ArchiveUnavailable

    real = ingestor.ingest
    outage = {"left": 3}

    def flaky(raws):  # type: ignore[no-untyped-def]
        if outage["left"]:
            outage["left"] -= 1
            raise ArchiveUnavailable("database restarting")
        return real(raws)

    monkeypatch.setattr(ingestor, "ingest", flaky)
    port, thread, replies = _fake_peer([frame(_voevent(42))])
    sub = VTPSubscriber("127.0.0.1", port, ingestor, local_ivo="ivo://test.mmbroker/sub")
    stop = threading.Event()
    worker = threading.Thread(target=sub.run, args=(stop,), daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: archive.count_alerts() == 1, 30)
        thread.join(10)
    finally:
        stop.set()
        worker.join(10)
    assert outage["left"] == 0 and replies and b'role="ack"' in replies[0]

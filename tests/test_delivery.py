"""Delivery from the outbox: real Comet broker and subscriber, real Kafka-protocol broker.

Never lost, never twice: VOEvents queued while a target is down are delivered
once it is back, each exactly once as the subscriber sees it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.archive.store import Archive
from broker.publish import outbox
from broker.publish.senders import DeliveryError, DeliveryLoop, VTPSender
from tests.servers import (
    RecordingSender,
    comet_broker,
    comet_send,
    comet_subscriber,
    consume,
    saved_ivorns,
    tansu,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
TEMPLATE = (Path(__file__).parent / "data" / "voevents" / "BAT_GRB_Pos_655721-214.xml"
            ).read_bytes()


def voevent(n: int) -> tuple[str, bytes]:
    ivorn = f"ivo://test.mmbroker/delivery#ev{n}"
    xml = re.sub(rb'ivorn="[^"]+"', f'ivorn="{ivorn}"'.encode(), TEMPLATE, count=1)
    return ivorn, xml


def queue(archive: Archive, ns: range, targets: list[str]) -> None:
    items = [outbox.Outgoing(i, x, "observation", {"entity": {}})
             for i, x in (voevent(n) for n in ns)]
    assert all(outbox.queue(archive, items, targets))


def run(loop: DeliveryLoop) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


_probes = iter(range(10_000, 20_000))


def connected(saved: Path, receive_port: int) -> bool:
    """Whether the subscriber is receiving: a probe event sent now is saved.

    Every probe has new bytes: Comet refuses bytes it has seen (its dedup).
    """
    ivorn, xml = voevent(next(_probes))
    try:
        comet_send(receive_port, xml)
    except RuntimeError:
        return False
    return wait_for(lambda: ivorn in saved_ivorns(saved), 3)


def test_queued_once_per_ivorn(archive: Archive) -> None:
    queue(archive, range(3), ["vtp", "kafka-xml"])
    again = outbox.queue(archive, [outbox.Outgoing(*voevent(1), "observation", {})], ["vtp"])
    assert again == [False]
    assert outbox.pending_count(archive) == 6
    assert {t for s in outbox.status(archive) for t in s["targets"]} == {"vtp", "kafka-xml"}


def test_one_round_queues_new_ivorns_once_and_hands_back_their_deliveries(
        archive: Archive) -> None:
    queue(archive, range(1), ["vtp"])
    items = [outbox.Outgoing(*voevent(n), "observation", {"entity": {}}) for n in (3, 0, 2, 3)]
    handed: list[outbox.Due] = []
    # In the caller's order: ev0 was queued before, the second ev3 repeats the first.
    assert outbox.queue(archive, items, ["vtp", "kafka-xml"], handed) == [
        True, False, True, False]
    assert [(d.ivorn.rsplit("#", 1)[1], d.target) for d in handed] == [
        ("ev2", "kafka-xml"), ("ev2", "vtp"), ("ev3", "kafka-xml"), ("ev3", "vtp")]
    assert all(d.xml == dict(voevent(n) for n in (2, 3))[d.ivorn] for d in handed)
    assert outbox.pending_count(archive) == 5
    (entry,) = [s for s in outbox.status(archive) if s["ivorn"].endswith("ev3")]
    assert sorted(entry["targets"]) == ["kafka-xml", "vtp"]
    from sqlalchemy import select

    from broker.archive.models import ProvenanceDoc
    with archive.engine.connect() as conn:
        subjects = sorted(conn.execute(select(ProvenanceDoc.subject_ivorn)).scalars())
    assert [s.rsplit("#", 1)[1] for s in subjects] == ["ev0", "ev2", "ev3"]


def test_a_claim_leases_its_deliveries_until_sent_released_or_expired(
        archive: Archive) -> None:
    from datetime import timedelta

    from broker.archive.store import utcnow

    queue(archive, range(3), ["vtp"])
    now = utcnow()
    first = outbox.claim_due(archive, "vtp", now=now)
    assert [d.ivorn for d in first] == [voevent(n)[0] for n in range(3)]
    assert outbox.claim_due(archive, "vtp", now=now) == []  # another sender gets nothing
    outbox.mark_sent(archive, [(first[0], now)])
    outbox.release(archive, [first[1].delivery_id], now)
    assert [d.ivorn for d in outbox.claim_due(archive, "vtp", now=now)] == [first[1].ivorn]
    # A sender that died holding a claim: its lease runs out and another sends it.
    later = now + timedelta(seconds=outbox.LEASE_S + 1)
    assert {d.ivorn for d in outbox.claim_due(archive, "vtp", now=later)} == {
        first[1].ivorn, first[2].ivorn}




def test_a_slow_sender_gives_back_the_rest_of_its_claim_at_half_the_lease(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sends slower than the lease allows: the sender stops at half of it and releases
    what it has not attempted, which another sender may then claim at once (without the
    hand-back it would wait out the lease, or be sent twice by two senders)."""
    import time

    queue(archive, range(4), ["vtp"])
    monkeypatch.setattr(outbox, "LEASE_S", 1.0)

    class Slow(RecordingSender):
        def send(self, ivorn: str, xml: bytes,
             on_wire: Callable[[], None] = lambda: None) -> None:
            time.sleep(0.3)
            super().send(ivorn, xml, on_wire)

    sender = Slow()
    DeliveryLoop(archive, sender)._deliver_some(threading.Event())  # type: ignore[arg-type]
    assert sender.sent == [voevent(0)[0], voevent(1)[0]]  # 0.6 s > half the lease: stop
    rest = outbox.claim_due(archive, "vtp")
    assert [d.ivorn for d in rest] == [voevent(2)[0], voevent(3)[0]]


def test_a_delivery_sent_but_not_marked_is_marked_not_sent_again(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from alerts_schema.errors import ArchiveUnavailable

    queue(archive, range(2), ["vtp"])
    sender = RecordingSender()
    loop = DeliveryLoop(archive, sender)  # type: ignore[arg-type]
    real_mark = outbox.mark_sent

    def archive_away(_archive: Archive, sent: list) -> None:
        if sent:
            raise ArchiveUnavailable("restarting")

    monkeypatch.setattr(outbox, "mark_sent", archive_away)
    with pytest.raises(ArchiveUnavailable):
        loop._deliver_some(threading.Event())
    monkeypatch.setattr(outbox, "mark_sent", real_mark)
    # Both sent (one batch, marked after it), neither marked.
    assert sender.sent == [voevent(0)[0], voevent(1)[0]] and outbox.pending_count(archive) == 2
    # Its lease over, the delivery is claimed again: marked sent, not sent twice.
    from sqlalchemy import update

    from broker.archive.models import Delivery
    from broker.archive.store import utcnow
    with archive.engine.begin() as conn:
        conn.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    loop._deliver_some(threading.Event())
    assert sender.sent == [voevent(0)[0], voevent(1)[0]]
    assert outbox.pending_count(archive) == 0


class SubscriberBack:
    """The delivery gate of a Comet that restarts (as the Comet child's): sending waits
    while Comet is down and until its subscriber is back, else what Comet broadcasts before
    the subscriber reconnects is lost to it (Comet keeps nothing for absent subscribers)."""

    def __init__(self) -> None:
        self.back = threading.Event()

    def hold_s(self) -> float:
        return 0.0 if self.back.is_set() else 0.5

    def take_resend(self) -> None:
        return None


def test_comet_down_for_30_s_loses_and_doubles_nothing(tmp_path: Path, archive: Archive) -> None:
    with comet_broker(tmp_path) as (receive, broadcast):
        pass  # learn two free ports, then leave them unused: Comet is "down"
    loop = DeliveryLoop(archive, VTPSender("127.0.0.1", receive, timeout_s=2.0),
                        poll_s=0.2, max_backoff_s=4.0)
    thread, stop = run(loop)
    gate = SubscriberBack()
    try:
        queue(archive, range(100), ["vtp"])
        time.sleep(30)  # the outage, with all 100 waiting in the outbox
        assert loop.sent == 0 and outbox.pending_count(archive) == 100
        failing = outbox.status(archive, limit=100)[-1]["targets"]["vtp"]
        assert failing["attempts"] >= 1 and "VTP" in failing["last_error"]
        loop.gate = gate  # Comet is about to come back: hold until its subscriber is
        with comet_broker(tmp_path, receive_port=receive, broadcast_port=broadcast), \
                comet_subscriber(tmp_path, broadcast) as saved:
            assert wait_for(lambda: connected(saved, receive), 30), "subscriber never up"
            gate.back.set()
            assert wait_for(lambda: outbox.pending_count(archive) == 0, 60)
            expected = {voevent(n)[0] for n in range(100)}
            assert wait_for(lambda: expected <= set(saved_ivorns(saved)), 60)
            counts = Counter(i for i in saved_ivorns(saved) if i in expected)
    finally:
        stop.set()
        thread.join(10)
    assert len(counts) == 100 and set(counts.values()) == {1}


_SENDER = """
import signal, sys, threading
from broker.archive.store import Archive
from broker.publish.senders import DeliveryLoop, KafkaSender
archive = Archive.open(sys.argv[1], upgrade=False)
loop = DeliveryLoop(archive, KafkaSender(sys.argv[2], "mmbroker.voevent", timeout_s=2.0),
                    poll_s=0.2, max_backoff_s=4.0)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
print("ready", flush=True)
loop.run(stop)
print(loop.sent, flush=True)
"""


def test_kafka_down_loses_and_doubles_nothing(tmp_path: Path, db_url: str) -> None:
    """The delivery loop runs in a process of its own: kafka-python drops the sockets
    of failed connection attempts unclosed, and their ResourceWarnings must not land
    in whatever test is running when they are collected."""
    import os
    import subprocess
    import sys

    from tests.servers import stop_process

    archive = Archive.open(db_url)
    with tansu(tmp_path) as bootstrap:
        pass  # a free port for a broker that is down
    port = int(bootstrap.rsplit(":", 1)[1])
    queue(archive, range(100), ["kafka-xml"])
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, db_url, bootstrap],
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        def failing() -> dict:
            """The delivery being retried: the oldest (deliveries keep their order)."""
            return outbox.status(archive, limit=100)[-1]["targets"]["kafka-xml"]

        assert wait_for(lambda: failing()["attempts"] >= 1, 60), failing()
        assert "Kafka" in failing()["last_error"]
        assert outbox.pending_count(archive) == 100
        with tansu(tmp_path, port=port) as same:
            assert same == bootstrap
            assert wait_for(lambda: outbox.pending_count(archive) == 0, 90)
            got = consume(bootstrap, "mmbroker.voevent", 100)
    finally:
        stop_process(sender)
        archive.close()
    keys = Counter(k.decode() for k, _ in got)
    assert set(keys) == {voevent(n)[0] for n in range(100)} and set(keys.values()) == {1}
    assert all(v == voevent(int(k.decode().rsplit("ev", 1)[1]))[1] for k, v in got)


def test_two_senders_share_the_outbox_and_send_each_delivery_once(tmp_path: Path,
                                                                  db_url: str) -> None:
    """``mmbroker stage publish`` run twice: a claim leases its deliveries, so the other
    sender leaves them alone and each goes out once (a Kafka topic keeps every send,
    where Comet would hide a double behind its own dedup)."""
    import os
    import subprocess
    import sys

    from tests.servers import stop_process

    archive = Archive.open(db_url)
    with tansu(tmp_path) as bootstrap:
        senders = [subprocess.Popen([sys.executable, "-c", _SENDER, db_url, bootstrap],
                                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                                    stdout=subprocess.PIPE, text=True)
                   for _ in range(2)]
        try:
            # Both polling before anything is due, so both take a share.
            assert [s.stdout.readline().strip() for s in senders] == ["ready", "ready"]
            queue(archive, range(400), ["kafka-xml"])
            assert wait_for(lambda: outbox.pending_count(archive) == 0, 120)
            got = consume(bootstrap, "mmbroker.voevent", 400)
        finally:
            shares = []
            for sender in senders:
                stop_process(sender)
                shares.append(int(sender.communicate()[0].strip() or 0))
            archive.close()
    assert sum(shares) == 400 and min(shares) > 0, shares
    keys = Counter(k.decode() for k, _ in got)
    assert set(keys) == {voevent(n)[0] for n in range(400)}
    assert set(keys.values()) == {1}, [k for k, n in keys.items() if n > 1][:5]


def test_handed_over_deliveries_are_sent_without_reading_the_outbox_each_time(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a hand-off the loop reads the outbox at most once per poll, still finds what
    only the outbox holds (here: a delivery queued by someone else), and marks each
    batch's sends in one transaction."""
    from broker.archive.store import utcnow

    sender = RecordingSender()
    loop = DeliveryLoop(archive, sender, poll_s=0.3)  # type: ignore[arg-type]
    claims: list[float] = []
    marks: list[int] = []
    real_claim, real_mark = outbox.claim_due, outbox.mark_sent

    def claim(*args: object, **kwargs: object) -> list[outbox.Due]:
        claims.append(time.monotonic())
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    def mark(archive_: Archive, sent: list[tuple[outbox.Due, object]]) -> None:
        if sent:
            marks.append(len(sent))
        real_mark(archive_, sent)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "claim_due", claim)
    monkeypatch.setattr(outbox, "mark_sent", mark)
    stop = threading.Event()
    assert loop._deliver_some(stop) is False and len(claims) == 1  # nothing yet: one read
    for n in range(3):  # three rounds, each handed over as the publisher does
        handed: list[outbox.Due] = []
        items = [outbox.Outgoing(*voevent(10 * n + k), "observation", {}) for k in range(2)]
        outbox.queue(archive, items, ["vtp"], handed)
        loop.offer(handed)
        assert loop._deliver_some(stop) is True  # the hand-off
        assert loop._deliver_some(stop) is False  # read just now: not read again
    assert len(claims) == 1 and marks == [2, 2, 2]
    # Queued without a hand-off (another process): found by the next read, one poll on.
    queue(archive, range(100, 101), ["vtp"])
    time.sleep(0.35)
    assert loop._deliver_some(stop) is True and len(claims) == 2
    assert sender.sent == [voevent(n)[0] for n in (0, 1, 10, 11, 20, 21, 100)]
    assert outbox.pending_count(archive) == 0
    with archive.engine.connect() as conn:
        from sqlalchemy import select

        from broker.archive.models import Delivery
        times = list(conn.execute(select(Delivery.delivered_at)).scalars())
    assert len(times) == 7 and all(t is not None and t <= utcnow() for t in times)


def test_an_idle_sender_releases_the_publisher_once_its_frame_is_out_not_at_the_ack(
        archive: Archive) -> None:
    """What a publisher waits for after a hand-off (``DeliveryLoop.offer``): the frame
    written, never the target's answer.  The target here is a VTP receiver that holds its
    ack until told: Comet answers too fast to tell the two apart."""
    import socket

    from listeners.vtp_protocol import frame, read_frame, transport

    received, answer = threading.Event(), threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                read_frame(conn, max_bytes=1 << 20, keep_going=lambda: True)
                received.set()
                answer.wait(10)
                conn.sendall(frame(transport("ack", origin="ivo://test.mmbroker/receiver")))

        threading.Thread(target=receive, daemon=True).start()
        loop = DeliveryLoop(archive, VTPSender("127.0.0.1", server.getsockname()[1]),
                            poll_s=30)
        thread, stop = run(loop)
        try:
            assert wait_for(lambda: loop._idle, 10, interval_s=0.01)
            handed: list[outbox.Due] = []
            outbox.queue(archive, [outbox.Outgoing(*voevent(1), "observation", {})], ["vtp"],
                         handed)
            on_wire = loop.offer(handed)
            assert on_wire is not None and on_wire.wait(10)
            assert received.wait(10) and not answer.is_set()
            assert outbox.pending_count(archive) == 1  # not acknowledged: not marked sent
            answer.set()
            assert wait_for(lambda: outbox.pending_count(archive) == 0, 10, interval_s=0.01)
        finally:
            answer.set()
            stop.set()
            loop.wake.set()
            thread.join(10)


def test_a_busy_or_failing_sender_never_holds_the_publisher(archive: Archive) -> None:
    """A loop in the middle of a round offers nothing to wait for; a target that refuses
    the connection releases the waiter with the failed attempt, not at the bound."""
    loop = DeliveryLoop(archive, VTPSender("127.0.0.1", _closed_port()), poll_s=30)
    handed: list[outbox.Due] = []
    outbox.queue(archive, [outbox.Outgoing(*voevent(2), "observation", {})], ["vtp"], handed)
    assert loop.offer(handed) is None  # not idle (not even started): nothing to wait for
    assert loop.offer([]) is None
    thread, stop = run(loop)
    try:
        assert wait_for(lambda: loop._idle, 10, interval_s=0.01)
        handed = []
        outbox.queue(archive, [outbox.Outgoing(*voevent(3), "observation", {})], ["vtp"],
                     handed)
        on_wire = loop.offer(handed)
        assert on_wire is not None and on_wire.wait(10)
        assert outbox.pending_count(archive) == 2  # refused: both wait for a retry
    finally:
        stop.set()
        loop.wake.set()
        thread.join(10)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the spare VTP connection (VTPSender.prepare) ------------------------------------------

def test_a_prepared_connection_carries_the_next_event_through_comet(
        tmp_path: Path, archive: Archive) -> None:
    """The idle loop opens a connection ahead; the next event goes out on it, and Comet
    acknowledges and broadcasts it as it does an event on a connection of its own."""
    with comet_broker(tmp_path) as (receive, broadcast), \
            comet_subscriber(tmp_path, broadcast) as saved:
        assert wait_for(lambda: connected(saved, receive), 30), "subscriber never up"
        sender = VTPSender("127.0.0.1", receive, timeout_s=5.0)
        loop = DeliveryLoop(archive, sender, poll_s=30)
        thread, stop = run(loop)
        try:
            assert wait_for(lambda: sender._spare is not None, 10, interval_s=0.01)
            handed: list[outbox.Due] = []
            outbox.queue(archive, [outbox.Outgoing(*voevent(1), "observation", {})], ["vtp"],
                         handed)
            loop.offer(handed)
            assert wait_for(lambda: outbox.pending_count(archive) == 0, 30, interval_s=0.01)
            assert sender.spares_used == 1
            # Prepared again once idle; an event sent without it connects by itself.
            assert wait_for(lambda: sender._spare is not None, 10, interval_s=0.01)
        finally:
            stop.set()
            loop.wake.set()
            thread.join(10)
        assert sender._spare is None  # closed with the loop
        VTPSender("127.0.0.1", receive, timeout_s=5.0).send(*voevent(2))
        assert wait_for(lambda: {voevent(1)[0], voevent(2)[0]} <= set(saved_ivorns(saved)), 30)


class _Receiver:
    """A VTP receiver on loopback that acknowledges every frame, except that it treats the
    first ``misbehave`` connections as told: ``close`` (at once), ``reset`` (RST) or
    ``speak`` (writes first, which no VTP receiver does)."""

    def __init__(self, misbehave: list[str]) -> None:
        import socket

        self.misbehave = list(misbehave)
        self.frames: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.handled = threading.Semaphore(0)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import struct

        from listeners.vtp_protocol import frame, read_frame, transport

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                how = self.misbehave.pop(0) if self.misbehave else "ack"
                if how == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif how == "speak":
                    conn.sendall(b"?")
                    time.sleep(0.5)
                elif how == "ack":
                    try:
                        self.frames.append(read_frame(conn, max_bytes=1 << 20,
                                                      keep_going=lambda: True))
                        conn.sendall(frame(transport("ack", origin="ivo://test.mmbroker/r")))
                    except (OSError, ConnectionError):
                        pass
            self.handled.release()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("how", ["close", "reset", "speak"])
def test_a_spare_the_receiver_closed_or_spoiled_is_not_used(how: str) -> None:
    """A spare the receiver has closed, reset or written to is dropped, and the event goes
    out on a new connection: delivered once, nothing lost."""
    receiver = _Receiver([how])
    try:
        sender = VTPSender("127.0.0.1", receiver.port, timeout_s=5.0)
        sender.prepare()
        if how != "speak":
            assert receiver.handled.acquire(timeout=10)  # the spare is spoiled by now
        else:
            time.sleep(0.2)
        ivorn, xml = voevent(3)
        sender.send(ivorn, xml)
        assert sender.spares_used == 0 and receiver.frames == [xml]
    finally:
        receiver.close()


def test_a_spare_past_its_age_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Comet closes a connection 20 s after it was made: a spare older than
    SPARE_MAX_AGE_S is replaced by the idle loop, and never written to."""
    from broker.publish import senders

    receiver = _Receiver([])
    try:
        sender = VTPSender("127.0.0.1", receiver.port, timeout_s=5.0)
        sender.prepare()
        first = sender._spare
        sender.prepare()
        assert sender._spare is first  # young: kept
        monkeypatch.setattr(senders, "SPARE_MAX_AGE_S", 0.05)
        time.sleep(0.1)
        sender.prepare()
        assert sender._spare is not None and sender._spare is not first  # old: replaced
        time.sleep(0.1)  # and the new one old too when the event comes
        sender.send(*voevent(4))
        assert sender.spares_used == 0 and len(receiver.frames) == 1
    finally:
        receiver.close()


def test_a_spare_that_fails_before_its_frame_gives_way_to_a_new_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset between the check and the frame: the send goes on a new connection (the
    receiver has nothing of it), delivered once, and the spare is not counted as used."""
    import socket

    receiver = _Receiver(["reset"])
    try:
        sender = VTPSender("127.0.0.1", receiver.port, timeout_s=5.0)
        spoiled = socket.create_connection(("127.0.0.1", receiver.port))
        assert receiver.handled.acquire(timeout=10)
        time.sleep(0.1)  # the RST is in
        monkeypatch.setattr(sender, "_take_spare", lambda: spoiled)  # past the check
        ivorn, xml = voevent(5)
        sender.send(ivorn, xml)
        assert receiver.frames == [xml] and sender.spares_used == 0
    finally:
        receiver.close()


def test_preparing_replaces_a_spare_the_receiver_closed() -> None:
    """A young spare Comet has closed (it restarted, say) is replaced while idle, so the
    next event still finds one open."""
    receiver = _Receiver(["close"])
    try:
        sender = VTPSender("127.0.0.1", receiver.port, timeout_s=5.0)
        sender.prepare()
        first = sender._spare
        assert receiver.handled.acquire(timeout=10)
        time.sleep(0.1)  # the FIN is in
        sender.prepare()
        assert sender._spare is not None and sender._spare is not first
        sender.send(*voevent(7))
        assert sender.spares_used == 1 and len(receiver.frames) == 1
    finally:
        receiver.close()


def test_no_spare_when_comet_could_close_it_before_the_sender_gives_up() -> None:
    """Comet closes a connection 20 s after it was made: a sender that waits 19 s for an
    answer keeps no spare."""
    receiver = _Receiver([])
    try:
        sender = VTPSender("127.0.0.1", receiver.port, timeout_s=19.0)
        sender.prepare()
        assert sender._spare is None
    finally:
        receiver.close()


def test_preparing_for_a_receiver_that_is_down_raises_nothing() -> None:
    sender = VTPSender("127.0.0.1", _closed_port(), timeout_s=1.0)
    sender.prepare()
    assert sender._spare is None
    with pytest.raises(DeliveryError):
        sender.send(*voevent(6))

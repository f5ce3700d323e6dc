"""Delivery targets: a Comet broker over VTP, and Kafka output topics; the loop feeding them.

A sender's ``send(ivorn, xml, on_wire)`` returns only once the target has accepted
the event (VTP ``ack``; Kafka acks=all) and raises otherwise; the
:class:`DeliveryLoop` marks the delivery sent or schedules a retry.  ``on_wire`` is
called as soon as the event has left this process's hands, before the target's
answer is awaited: the publisher that handed a delivery over waits for that moment
(a fraction of a millisecond) before it goes on with work that would hold the
interpreter (see :meth:`DeliveryLoop.offer`).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from alerts_schema.errors import InputError, RetryableError
from broker.archive.store import Archive, utcnow
from broker.metrics import DELIVERIES
from broker.publish import outbox
from listeners import xml_safe
from listeners.vtp_protocol import COMET_MAX_FRAME_BYTES, frame, read_frame

log = logging.getLogger(__name__)


class DeliveryError(RetryableError):
    """The target refused or could not be reached; the delivery will be retried."""


def no_waiter() -> None:
    """``on_wire`` when no one waits for the event to leave."""


class Sender(Protocol):
    target: str

    def send(self, ivorn: str, xml: bytes, on_wire: Callable[[], None] = no_waiter) -> None:
        """Deliver one VOEvent; return once the target accepted it, raise
        :class:`DeliveryError` if it did not.  Call ``on_wire`` once the event has left
        this process's hands (written to the socket, or handed to a client library's
        I/O thread), before waiting for the target's answer."""

    def prepare(self) -> None:
        """Get ready for the next send while idle (open a connection ahead, say); never
        raises: a send that finds nothing prepared does the work itself."""

    def close(self) -> None: ...


COMET_RECEIVER_TIMEOUT_S = 20.0
"""Comet's receiver closes every connection this long after it was made, s, whatever
came on it (``VOEventReceiver.TIMEOUT``, set in ``connectionMade`` and never reset)."""
SPARE_MAX_AGE_S = 8.0
"""Oldest a spare VTP connection may be, s: taken at this age it leaves Comet 12 s of
its 20 to answer, more than the sender waits (:class:`VTPSender` ``timeout_s``)."""
SPARE_ANSWER_MARGIN_S = 2.0
"""Of Comet's 20 s, what a spare leaves beyond the sender's own wait, s."""
SPARE_CONNECT_TIMEOUT_S = 1.0
"""Longest the idle delivery loop waits to open a spare connection, s."""


class VTPSender:
    """Submit VOEvents to a VTP receiver (Comet's ``--receive`` port) as an author.

    One connection per event, as Comet's own ``comet-sendvo``: Comet answers
    each submission with an ``ack`` or a ``nak`` and expects the author to go.

    The connection an event goes out on can be opened ahead: :meth:`prepare`, called
    by the idle delivery loop, keeps one spare (at most :data:`SPARE_MAX_AGE_S` old,
    and never so old that Comet's 20 s from the connect would end before the sender's
    ``timeout_s``), and :meth:`send` takes it if it is still open.  Connecting, and Comet accepting
    the connection, then happen between events instead of in front of one (issue 17).
    Without ``prepare`` (``comet-sendvo``'s way) every send connects.
    """

    target = "vtp"

    def __init__(self, host: str, port: int, *, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._spare: socket.socket | None = None
        self._spare_at = -math.inf  # when the spare was opened (monotonic s)
        self.spares_used = 0  # sends that went out on a spare (a test and debugging figure)

    @property
    def _spare_max_age_s(self) -> float:
        """Oldest spare this sender takes, s: Comet must still have its answer time
        (``timeout_s``, and a margin) left of the 20 s it allows from the connect."""
        return min(SPARE_MAX_AGE_S,
                   COMET_RECEIVER_TIMEOUT_S - self.timeout_s - SPARE_ANSWER_MARGIN_S)

    def prepare(self) -> None:
        if self._spare_max_age_s <= 0:
            self._drop_spare()  # Comet could close one before this sender gave up waiting
            return
        if self._spare is not None:
            spare = self._take_spare()  # kept if young and open, else dropped
            self._spare = spare
            if spare is not None:
                return
        try:
            self._spare = socket.create_connection((self.host, self.port),
                                                   timeout=SPARE_CONNECT_TIMEOUT_S)
        except OSError:  # the send will connect, and say why it cannot
            return
        self._spare_at = time.monotonic()

    def _take_spare(self) -> socket.socket | None:
        """The spare connection if it is young and the receiver has not closed it."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if time.monotonic() - self._spare_at >= self._spare_max_age_s:
            spare.close()
            return None
        try:
            spare.setblocking(False)
            spare.recv(1, socket.MSG_PEEK)
        except BlockingIOError:  # open, and nothing said: as a fresh connection
            spare.settimeout(self.timeout_s)
            return spare
        except OSError:
            pass
        # Closed, or the receiver spoke first, which no VTP receiver does.
        spare.close()
        return None

    def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()

    def send(self, ivorn: str, xml: bytes, on_wire: Callable[[], None] = no_waiter) -> None:
        if len(xml) > COMET_MAX_FRAME_BYTES:
            raise DeliveryError(f"{ivorn}: {len(xml)} bytes is over Comet's frame limit")
        reply = None
        spare = self._take_spare()
        try:
            if spare is not None:
                reply = self._exchange(spare, xml, on_wire, spare=True)
                if reply is not None:
                    self.spares_used += 1
            if reply is None:
                reply = self._exchange(socket.create_connection(
                    (self.host, self.port), timeout=self.timeout_s), xml, on_wire)
        except (OSError, ConnectionError) as exc:
            raise DeliveryError(f"VTP {self.host}:{self.port}: {exc}") from exc
        if reply is None:  # (only a spare's exchange gives none)
            raise DeliveryError(f"VTP {self.host}:{self.port}: no answer")
        try:
            root = xml_safe.parse(reply, max_bytes=1 << 16)
        except InputError as exc:
            raise DeliveryError(f"VTP {self.host}:{self.port} answered garbage: {exc}") from exc
        role = root.get("role")
        if role != "ack":
            reason = " ".join(t.strip() for t in root.itertext() if t.strip())[:300]
            raise DeliveryError(f"VTP {self.host}:{self.port} answered {role}: {reason}")

    def _exchange(self, connection: socket.socket, xml: bytes, on_wire: Callable[[], None],
                  *, spare: bool = False) -> bytes | None:
        """Write the frame on ``connection``, then read the receiver's answer; closes it.

        None when ``spare`` and writing the frame failed: the receiver reset the
        connection after :meth:`_take_spare`'s check and has none of it, so the send goes
        on on a new connection.  A receiver that closed it instead is usually found only
        when the answer is read: that, like any failure after the frame, raises, as on
        a new connection (the receiver may have the event: the outbox retries)."""
        with connection as s:
            s.settimeout(self.timeout_s)
            try:
                s.sendall(frame(xml))
            except OSError:
                if spare:
                    return None
                raise
            on_wire()
            return read_frame(s, max_bytes=1 << 16, keep_going=lambda: True)

    def close(self) -> None:
        self._drop_spare()


def kafka_producer(bootstrap: str | list[str], timeout_s: float,
                   config: dict[str, Any] | None = None) -> Any:
    """The broker's Kafka producer: idempotent, ``acks=all``, in order per key.

    Every producer the broker makes (VOEvent output, alert announcements) comes
    from here, so none can be durable in one place and not in another.
    """
    # kafka-python costs about 0.3 s to import: deferred until a producer is wanted.
    from kafka import KafkaProducer

    servers = [b.strip() for b in bootstrap.split(",") if b.strip()] \
        if isinstance(bootstrap, str) else bootstrap
    return KafkaProducer(
        bootstrap_servers=servers, acks="all", enable_idempotence=True,
        max_in_flight_requests_per_connection=5, retries=5, linger_ms=0,
        # Find the cluster again within seconds once it is back: the library's
        # default back-off grows to 30 s.
        reconnect_backoff_max_ms=2000,
        request_timeout_ms=int(timeout_s * 1000), max_block_ms=int(timeout_s * 1000),
        **(config or {}))


def json_form(ivorn: str, xml: bytes,
              document: Callable[[str], dict[str, Any] | None] | None) -> dict[str, Any]:
    """The JSON form of a published VOEvent, the same on every JSON output (Kafka,
    Hopskotch): its IVORN, the XML as issued, and the coincidence or alert document."""
    return {"ivorn": ivorn, "voevent_xml": xml.decode("utf-8"),
            "document": document(ivorn) if document else None}


class KafkaSender:
    """Publish VOEvents to a Kafka topic: the XML as is, or a JSON form of it.

    Idempotent producer with ``acks=all``; the message key is the IVORN, so
    every revision of an event lands in one partition, in order.
    """

    def __init__(self, bootstrap: str, topic: str, *, as_json: bool = False,
                 document: Callable[[str], dict[str, Any] | None] | None = None,
                 timeout_s: float = 10.0, config: dict[str, Any] | None = None,
                 target: str | None = None) -> None:
        self.target = target or f"kafka-{'json' if as_json else 'xml'}"
        self.topic = topic
        self.as_json = as_json
        self.document = document
        self.timeout_s = timeout_s
        self._bootstrap = [b.strip() for b in bootstrap.split(",") if b.strip()]
        self._config = config or {}
        self._producer: Any = None

    def _producer_or_connect(self) -> Any:
        if self._producer is None:
            try:
                self._producer = kafka_producer(self._bootstrap, self.timeout_s, self._config)
            except Exception as exc:  # kafka-python raises NoBrokersAvailable and kin
                raise DeliveryError(f"Kafka {','.join(self._bootstrap)}: {exc}") from exc
        return self._producer

    def send(self, ivorn: str, xml: bytes, on_wire: Callable[[], None] = no_waiter) -> None:
        payload = xml
        if self.as_json:
            payload = json.dumps(json_form(ivorn, xml, self.document),
                                 separators=(",", ":")).encode()
        producer = self._producer_or_connect()
        try:
            sent = producer.send(self.topic, key=ivorn.encode(), value=payload)
            on_wire()  # queued for the producer's I/O thread
            sent.get(timeout=self.timeout_s)
        except Exception as exc:
            # The producer is kept: it reconnects by itself, and a new producer per
            # failed attempt would leak the sockets of its failed connections.
            raise DeliveryError(f"Kafka topic {self.topic}: {type(exc).__name__}: {exc}") \
                from exc

    def prepare(self) -> None:
        pass  # the producer keeps its connections

    def close(self) -> None:
        close_producer(self._producer)
        self._producer = None


def close_producer(producer: Any, timeout_s: float = 2.0) -> None:
    """Close a producer made by :func:`kafka_producer` (None: nothing to close)."""
    if producer is None:
        return
    try:
        producer.close(timeout=timeout_s)
    except Exception:  # closing a producer whose broker is gone may raise
        log.debug("Kafka producer close failed", exc_info=True)


class DeliveryGate(Protocol):
    """What a target that restarts under us tells its delivery loop (the Comet child does)."""

    def hold_s(self) -> float:
        """Seconds to wait before sending anything (0: go)."""
        ...

    def take_resend(self) -> tuple[datetime | None, float] | None:
        """Once per restart: ``(before, window_s)``, deliveries marked sent since ``window_s``
        before ``before`` (None: the last one sent) to send again."""
        ...


PREPARE_AFTER_S = 0.005
"""How long the delivery loop waits idle before it has its sender prepare the next send,
s: Comet still broadcasts the event just acknowledged, which a new connection would
delay."""


class DeliveryLoop:
    """Send due deliveries of one target until stopped.

    Parameters
    ----------
    archive
        Where the outbox lives.
    sender
        The target's sender.
    poll_s
        How often to look for due deliveries when idle, seconds.
    max_backoff_s
        Longest wait between attempts at a target that is down, seconds.
    wake
        Set by the publisher when it queues something, so delivery starts at
        once instead of at the next poll.
    gate
        For a target that restarts (the Comet child): sending waits while it
        holds, and what it may have lost is sent again before anything else.
    """

    def __init__(self, archive: Archive, sender: Sender, *, poll_s: float = 0.5,
                 wake: threading.Event | None = None,
                 max_backoff_s: float = outbox.MAX_BACKOFF_S,
                 gate: DeliveryGate | None = None) -> None:
        self.archive = archive
        self.gate = gate
        self._resend: tuple[datetime | None, float] | None = None
        self.sender = sender
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.wake = wake or threading.Event()
        self.sent = 0
        # Deliveries handed over by the publisher right after its commit: sent
        # without reading the outbox back (the outbox remains the record, and
        # the path for retries).  Ids sent recently, so a claim does not resend.
        self._inbox: collections.deque[outbox.Due] = collections.deque()
        self._done: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._handed = False  # whether the last batch was handed over
        self._claimed_at = -math.inf  # when the outbox was last claimed from (monotonic s)
        self._idle = False  # waiting for work: a hand-over is sent at once
        self._waiting: list[threading.Event] = []  # hand-overs waiting for a frame out

    def offer(self, items: list[outbox.Due]) -> threading.Event | None:
        """Take this target's share of freshly committed deliveries, and wake up.

        Returns, when the loop was idle (so it sends them at once), an event set as soon
        as the first of them is on the wire (or its attempt failed, or the loop set them
        aside): the caller may wait for it, briefly, before work that would hold the
        interpreter; else None.  A woken sender thread needs the interpreter for a
        fraction of a millisecond to write the frame (and to connect, without a
        spare), but behind a thread that goes on computing (the cross-match after a
        trigger's VOEvent is queued) it got it only in slices of the switch interval:
        0.84 ms from the send's start to its connect, 0.06 ms with the wait (medians
        of 190 lone triggers, bench publish, timestamps inside the server, 2026-12-07
        20:13 UTC, before the spare connection; bench/RESULTS.md, Publishing).
        """
        mine = [i for i in items if i.target == self.sender.target]
        if not mine:
            return None
        # Read without a lock: at worst a caller waits its bound for a busy loop, or
        # does not wait for an idle one.
        on_wire = threading.Event() if self._idle else None
        if on_wire is not None:
            self._waiting.append(on_wire)
        self._inbox.extend(mine)
        self.wake.set()
        return on_wire

    def _on_wire(self) -> None:
        """Release whoever waits for a handed-over delivery to leave (see :meth:`offer`)."""
        while self._waiting:
            self._waiting.pop().set()

    def _next_batch(self) -> list[outbox.Due]:
        """What was handed over, else what the outbox has due.

        Right after a handed-over batch the outbox is read only if it was not read in
        the last ``poll_s``: what it holds besides (retries, releases, another process's
        deliveries) waits for a poll anyway, and a claim per trigger would cost each one
        a read and a write transaction."""
        if self._inbox:
            batch = []
            while self._inbox:
                batch.append(self._inbox.popleft())
            self._handed = True
            return batch
        if self._handed and time.monotonic() - self._claimed_at < self.poll_s:
            self._handed = False
            return []
        self._handed = False
        self._claimed_at = time.monotonic()
        try:
            return outbox.claim_due(self.archive, self.sender.target)
        except RetryableError as exc:
            log.warning("outbox unavailable: %s", exc)
            return []

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; nothing a database or target does ends the loop."""
        try:
            while not stop.is_set():
                try:
                    if self._held(stop):
                        continue
                    due: bool | None = self._deliver_some(stop)
                except RetryableError as exc:
                    log.warning("%s: outbox unavailable (%s); retrying", self.sender.target,
                                exc)
                    due = None
                except Exception:  # a delivery loop must outlive anything one round throws
                    log.exception("%s: delivery round failed; retrying", self.sender.target)
                    due = None
                finally:
                    self._on_wire()  # nothing handed over waits on a round that ended
                if due is None:  # the round failed: back off
                    stop.wait(min(5.0, self.max_backoff_s))
                elif not due:
                    self._idle = True
                    # Quiet for a moment (the last event is out of the target's hands
                    # too): get ready for the next one, then wait for it.
                    if not self.wake.wait(PREPARE_AFTER_S):
                        try:
                            self.sender.prepare()
                        except Exception:  # a courtesy: the send does the work itself
                            log.exception("%s: preparing the next send failed",
                                          self.sender.target)
                        self.wake.wait(self.poll_s)
                    self._idle = False
                    self.wake.clear()
        finally:
            self.sender.close()

    def _held(self, stop: threading.Event) -> bool:
        """Wait while the gate holds (whether it did); then resend what it asks for."""
        if self.gate is None:
            return False
        hold = self.gate.hold_s()
        if hold > 0:
            # Handed-over deliveries stay pending in the outbox: claimed, in order, later.
            self._inbox.clear()
            self._on_wire()
            stop.wait(min(hold, 0.5))
            return True
        # Kept until done: the outbox may be away when it is asked for.
        resend = self._resend = self._resend or self.gate.take_resend()
        if resend is not None:
            before, window_s = resend
            ids = outbox.resend_recent(self.archive, self.sender.target, window_s, before)
            self._resend = None
            for delivery_id in ids:
                self._done.pop(delivery_id, None)  # to be sent, not merely marked
            if ids:
                log.warning("%s: sending again the %d VOEvents acknowledged in the %.0f s "
                            "before the target restarted (subscribers drop copies)",
                            self.sender.target, len(ids), window_s)
        return False

    def _deliver_some(self, stop: threading.Event) -> bool:
        """Send one batch of due deliveries; whether there was anything to send.

        The batch's sends are marked in one transaction after it (each at the time its
        target acknowledged it), also when a send or the outbox fails part-way."""
        batch = self._next_batch()
        # Sent by this process, but marking them failed (the archive was away): marked
        # now, or they would be claimed (and leased) again and again.
        now = utcnow()
        outbox.mark_sent(self.archive, [(i, now) for i in batch if i.delivery_id in self._done])
        due = [i for i in batch if i.delivery_id not in self._done]
        sent: list[tuple[outbox.Due, datetime]] = []
        started = time.monotonic()
        try:
            for n, item in enumerate(due):
                # Well inside the lease: slow sends must not outlast it, or another sender
                # would claim the rest and send them too.
                if stop.is_set() or time.monotonic() - started > outbox.LEASE_S / 2:
                    # Claimed but not attempted: leased no more.
                    outbox.release(self.archive, [i.delivery_id for i in due[n:]], utcnow())
                    break
                try:
                    self.sender.send(item.ivorn, item.xml, self._on_wire)
                except DeliveryError as exc:
                    error = str(exc)
                except RetryableError:
                    raise  # the outbox itself is unreachable: the loop backs off
                except Exception as exc:  # an unexpected failure of one send
                    log.exception("%s: sending %s failed", self.sender.target, item.ivorn)
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    # Remembered before the outbox is updated: if marking fails, a later
                    # claim must not send the same delivery again from this process.
                    self._done[item.delivery_id] = None
                    if len(self._done) > 10_000:
                        self._done.popitem(last=False)
                    sent.append((item, utcnow()))
                    DELIVERIES.labels(self.sender.target, "sent").inc()
                    self.sent += 1
                    continue
                # The target is down: this one and those behind it wait for the back-off,
                # in their order.
                delay = outbox.mark_failed_attempt(
                    self.archive, item.delivery_id, item.attempts, error,
                    max_backoff_s=self.max_backoff_s,
                    behind=[i.delivery_id for i in due[n + 1:]])
                DELIVERIES.labels(self.sender.target, "retry").inc()
                log.warning("%s: %s; retry in %.0f s", self.sender.target, error, delay)
                break
        finally:
            outbox.mark_sent(self.archive, sent)
        return bool(due)

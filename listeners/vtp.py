"""VTP transport: subscribe to a Comet (or any VTP) broker and archive what it sends.

The subscriber speaks VTP itself rather than embedding Comet's Twisted
client, so that every frame meets only the hardened parser
(:mod:`listeners.xml_safe`) and the size limit before anything else reads it.
It answers ``iamalive`` and ``authenticate``, acknowledges each VOEvent once
the archive has committed it, and reconnects with back-off when the peer goes
away (or goes quiet for longer than the VTP keep-alive allows).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from alerts_schema.errors import ArchiveUnavailable, InputError
from listeners import xml_safe
from listeners.connection import ConnectionReporter
from listeners.envelope import RawMessage, Sink
from listeners.vtp_protocol import FrameTooLarge, frame, read_frame, transport

log = logging.getLogger(__name__)

# A Comet broker sends iamalive every 60 s; twice that in silence means the
# connection is dead even if TCP has not noticed.
ALIVE_TIMEOUT_S = 120.0


class VTPSubscriber:
    """Subscribe to the VTP broadcaster at ``host:port``.

    Parameters
    ----------
    host, port
        The peer's broadcast address.
    sink
        Archives each VOEvent (source ``vtp:<host>:<port>``).
    local_ivo
        This broker's IVORN, sent in responses.
    filters
        XPath filters sent to the peer when it asks us to authenticate.
    max_frame_bytes
        Frames announced larger are quarantined (head kept) and the
        connection is dropped, since the stream cannot be trusted after it.
    """

    def __init__(self, host: str, port: int, sink: Sink, *, local_ivo: str,
                 filters: tuple[str, ...] = (), max_frame_bytes: int = 1 << 20,
                 alive_timeout_s: float = ALIVE_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.sink = sink
        self.local_ivo = local_ivo
        self.filters = filters
        self.max_frame_bytes = max_frame_bytes
        self.alive_timeout_s = alive_timeout_s
        self.source = f"vtp:{host}:{port}"
        self.events = 0
        self.connections = 0
        self.connected = threading.Event()
        self.connection = ConnectionReporter(sink, [self.source])
        self._stop: threading.Event | None = None

    def run(self, stop: threading.Event) -> None:
        """Receive until ``stop`` is set, reconnecting with back-off (1 s doubling to 30 s)."""
        self._stop = stop
        delay = 1.0
        while not stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=5) as sock:
                    sock.settimeout(0.5)
                    self.connections += 1
                    self.connected.set()
                    self.connection(True)
                    delay = 1.0
                    log.info("VTP: connected to %s", self.source)
                    self._session(sock, stop)
            except (OSError, ConnectionError) as exc:
                if not stop.is_set():
                    log.info("VTP: %s: %s; reconnecting in %.0f s", self.source, exc, delay)
            except Exception:  # a listener must outlive anything one frame can throw
                log.exception("VTP: %s failed; reconnecting in %.0f s", self.source, delay)
            finally:
                self.connected.clear()
                self.connection(False)
            if stop.wait(delay):
                return
            delay = min(delay * 2, 30.0)

    def _session(self, sock: socket.socket, stop: threading.Event) -> None:
        last_traffic = time.monotonic()

        def keep_going() -> bool:
            if time.monotonic() - last_traffic > self.alive_timeout_s:
                raise ConnectionError(f"no traffic for {self.alive_timeout_s:.0f} s")
            return not stop.is_set()

        while not stop.is_set():
            try:
                payload = read_frame(sock, max_bytes=self.max_frame_bytes,
                                     keep_going=keep_going)
            except FrameTooLarge as exc:
                self.sink.ingest([RawMessage(self.source, exc.head,
                                                 transport={"vtp": {"peer": self.source}},
                                                 full_size=exc.length)])
                raise ConnectionError(f"peer sent a {exc.length}-byte frame") from exc
            last_traffic = time.monotonic()
            reply = self._handle(payload)
            if reply:
                sock.sendall(frame(reply))

    def _archive(self, raw: RawMessage) -> None:
        """Ingest one event, waiting out an archive outage rather than dropping it.

        VTP has no replay: an event not archived now is lost, so the frame is
        held (and not acknowledged) until the archive is back or we stop.
        """
        while True:
            try:
                self.sink.ingest([raw])
                return
            except ArchiveUnavailable as exc:
                log.warning("VTP: archive unavailable (%s); holding %s", exc, raw.sha256[:12])
                if self._stop is not None and self._stop.wait(2.0):
                    raise ConnectionError("stopping with an event not archived") from exc

    def _handle(self, payload: bytes) -> bytes | None:
        """Archive a VOEvent or answer a Transport message; the reply to send, if any."""
        try:
            root = xml_safe.parse(payload, max_bytes=self.max_frame_bytes)
        except InputError:
            root = None
        if root is not None and str(root.tag).endswith("Transport"):
            role = root.get("role")
            origin = root.findtext("Origin") or ""
            if role == "iamalive":
                return transport("iamalive", origin=origin, response=self.local_ivo)
            if role == "authenticate":
                return transport("authenticate", origin=origin, response=self.local_ivo,
                                 params=[("xpath-filter", f) for f in self.filters])
            log.debug("VTP: ignoring Transport role %r from %s", role, self.source)
            return None
        # A VOEvent, or something hostile or broken: the ingest pipeline stores
        # the bytes and quarantines what it cannot normalize, with the reason.
        raw = self.sink.receive(self.source, payload,
                                    transport={"vtp": {"peer": self.source}})
        self._archive(raw)
        self.events += 1
        ivorn = root.get("ivorn") if root is not None else None
        # Comet's subscribers ACK even refused events: a NAK would make the
        # upstream broker drop us from its distribution list (VTP note 6.4).
        return transport("ack", origin=ivorn or "", response=self.local_ivo)

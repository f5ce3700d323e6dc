"""The VOEvent Transport Protocol (VTP): framing and Transport messages.

A VTP frame is a 4-byte big-endian length followed by that many bytes of XML:
either a VOEvent or a ``trn:Transport`` message (``iamalive``,
``authenticate``, ``ack``, ``nak``).  Comet speaks exactly this; its broker
drops frames over 99,999 bytes without answering, so senders stay below.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from datetime import UTC, datetime

from lxml import etree

from alerts_schema.errors import HostileInput

TRANSPORT_NS = "http://www.telescope-networks.org/xml/Transport/v1.1"
TRANSPORT_SCHEMA = ("http://telescope-networks.org/schema/Transport/v1.1 "
                    "http://www.telescope-networks.org/schema/Transport-v1.1.xsd")
COMET_MAX_FRAME_BYTES = 99_999
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_LENGTH = struct.Struct("!I")


class FrameTooLarge(HostileInput):
    """The peer announced a frame over the limit; ``head`` holds its first bytes."""

    def __init__(self, length: int, head: bytes) -> None:
        super().__init__(f"VTP frame of {length} bytes")
        self.length = length
        self.head = head


def frame(payload: bytes) -> bytes:
    """``payload`` with its VTP length prefix."""
    return _LENGTH.pack(len(payload)) + payload


def read_exactly(sock: socket.socket, n: int, *, keep_going: Callable[[], bool]) -> bytes:
    """Read ``n`` bytes; socket timeouts just re-check ``keep_going``.

    Raises ConnectionError when the peer closes or ``keep_going`` turns false.
    """
    chunks, remaining = [], n
    while remaining:
        if not keep_going():
            raise ConnectionError("stopping")
        try:
            chunk = sock.recv(min(remaining, 1 << 16))
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, *, max_bytes: int, keep_going: Callable[[], bool]) -> bytes:
    """One frame's payload.

    Raises
    ------
    FrameTooLarge
        When the announced length is over ``max_bytes``; its first
        ``max_bytes`` bytes are read so they can be kept, the rest are not.
    """
    (length,) = _LENGTH.unpack(read_exactly(sock, 4, keep_going=keep_going))
    if length > max_bytes:
        raise FrameTooLarge(length, read_exactly(sock, max_bytes, keep_going=keep_going))
    return read_exactly(sock, length, keep_going=keep_going)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def transport(role: str, *, origin: str, response: str | None = None,
              params: list[tuple[str, str]] | None = None) -> bytes:
    """A ``trn:Transport`` message as bytes (UTF-8, with declaration)."""
    root = etree.Element(f"{{{TRANSPORT_NS}}}Transport", nsmap={"trn": TRANSPORT_NS},
                         attrib={"version": "1.0", "role": role,
                                 f"{{{_XSI}}}schemaLocation": TRANSPORT_SCHEMA})
    etree.SubElement(root, "Origin").text = origin
    if response:
        etree.SubElement(root, "Response").text = response
    etree.SubElement(root, "TimeStamp").text = _now()
    if params:
        meta_el = etree.SubElement(root, "Meta")
        for name, value in params:
            etree.SubElement(meta_el, "Param", attrib={"name": name, "value": value})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

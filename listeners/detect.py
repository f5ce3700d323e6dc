"""Sniff the format of raw message bytes without parsing them.

Only the first bytes are looked at; nothing here decodes a payload, so this is
safe to run on hostile input.  Pickles are recognized so that they can be
refused by name (SNEWS's publisher sends them; the broker never unpickles).
"""

from __future__ import annotations

import pickletools
from enum import StrEnum

from alerts_schema.errors import HostileInput, MalformedInput

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


class Format(StrEnum):
    JSON = "json"
    XML = "xml"
    AVRO_OCF = "avro-ocf"             # Avro object container file ("Obj\x01"), e.g. ZTF
    AVRO_CONFLUENT = "avro-confluent"  # magic byte 0 + 4-byte schema id, e.g. Rubin
    UNKNOWN = "unknown"


def sniff(data: bytes) -> Format:
    """The format of ``data``.

    Raises
    ------
    MalformedInput
        For an empty or whitespace-only message.
    HostileInput
        For a Python pickle, which is refused unread.
    """
    if not data.strip():
        raise MalformedInput("empty message")
    if data.startswith(b"Obj\x01"):
        return Format.AVRO_OCF
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise HostileInput(f"Python pickle (protocol {data[1]}): pickles are never unpickled")
    if data[:1] == b"\x00" and len(data) > 5:
        return Format.AVRO_CONFLUENT
    head = data[:64]
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom):]
            break
    head = head.lstrip()
    if head[:1] in (b"{", b"["):
        return Format.JSON
    if head[:1] == b"<":
        return Format.XML
    if _is_text_pickle(data):
        raise HostileInput("Python pickle (protocol 0/1): pickles are never unpickled")
    return Format.UNKNOWN


def _is_text_pickle(data: bytes) -> bool:
    """True when ``data`` disassembles as a whole pickle (no code runs: opcodes only)."""
    if not data.rstrip().endswith(b".") or len(data) > 1 << 20:
        return False
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # any failure at all means "not a pickle"
        return False
    return bool(ops) and ops[-1][0].name == "STOP"

"""The one way mmbroker parses untrusted XML (VOEvents from Kafka, VTP peers, files).

lxml and ``voeventparse.loads`` parse with library defaults, which expand
entities and may load DTDs.  Every XML byte string from outside goes through
:func:`parse` instead, which layers three defences:

1. A size cap checked before anything else (:class:`HostileInput`).
2. A scan of the prolog, before libxml2 sees the bytes, that refuses any
   DOCTYPE declaring entities (general or parameter) or naming an external
   DTD (``SYSTEM``/``PUBLIC``), and any encoding outside a short allow-list
   (an exotic encoding such as UTF-7 could hide a DOCTYPE from the scan).
3. A parser that would not resolve anything even if the scan missed it
   (no entity substitution, no DTD loading or validation, no network, no
   huge trees, processing instructions and comments dropped), followed by a
   check of the parsed tree for entity nodes and DTD declarations.

Comet does the same in spirit (``resolve_entities=False`` and a refusal of
any entity node left in the tree); this module also refuses before parsing,
so an entity-laden document never reaches libxml2's expansion code at all.
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

from alerts_schema.errors import HostileInput, MalformedInput

__all__ = ["ALLOWED_ENCODINGS", "make_parser", "parse"]

# Encodings a VOEvent producer plausibly uses.  All keep XML markup readable by
# the prolog scan below (ASCII-compatible, or UTF-16/32 which the scan decodes).
ALLOWED_ENCODINGS = frozenset({
    "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "iso-latin-1",
    "iso-8859-15", "windows-1252", "cp1252", "utf-16", "utf-16le", "utf-16be", "utf-32",
    "utf-32le", "utf-32be",
})

_LIBXML2_GUARDS = ("XML_PARSE_HUGE", "Excessive depth", "amplification", "entity reference loop",
                   "references external entity")
_XML_DECL_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_ROOT_START = re.compile(r"<[A-Za-z_:\u0080-\uffff]")
_ENTITY_DECL = re.compile(r"<!ENTITY\s+(%\s+)?([^\s>]+)")
_EXTERNAL_ID = re.compile(r"\b(SYSTEM|PUBLIC)\b\s*(\"[^\"]*\"|'[^']*')?")


def make_parser() -> etree.XMLParser:
    """A new hardened lxml parser (parsers are not thread-safe, so one per call).

    Nothing this parser reads can make it fetch, expand or validate anything:
    entity references stay unresolved nodes, no DTD is loaded (internal or
    external), libxml2's network access is off and its size/depth safety
    limits stay on (``huge_tree=False``).
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,  # comments carry nothing a normalizer reads
        strip_cdata=True,
        # collect_ids stays at its default: with lxml 6.1 / libxml2 2.14,
        # collect_ids=False makes the parser load external DTD subsets and
        # parameter entities (measured here; tests/test_xml_safe.py guards it).
    )


def parse(data: bytes, *, max_bytes: int) -> etree._Element:
    """Parse untrusted XML bytes into an lxml element, refusing anything hostile.

    Parameters
    ----------
    data
        The raw bytes as received (never a decoded ``str``: the XML declaration
        says how to decode them).
    max_bytes
        Largest document accepted, in bytes.

    Returns
    -------
    lxml.etree._Element
        The root element.

    Raises
    ------
    HostileInput
        Over ``max_bytes``; a DOCTYPE that declares entities or names an
        external DTD (the reason names them); an encoding outside
        :data:`ALLOWED_ENCODINGS`; a document beyond libxml2's safety limits.
    MalformedInput
        Not well-formed XML; the reason carries lxml's message (line, column).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise HostileInput(f"XML of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if not data.strip():
        raise MalformedInput("malformed XML: empty document")
    _refuse_hostile_prolog(_prolog_text(data))
    try:
        root = etree.fromstring(data, parser=make_parser())
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        # libxml2's own guards (depth/size limits, entity amplification, entity
        # references in attributes) fire on bombs, not on typos.
        if any(sign in message for sign in _LIBXML2_GUARDS):
            raise HostileInput(f"XML exceeds the parser's safety limits: {message}") from exc
        raise MalformedInput(f"malformed XML: {message}") from exc
    except (etree.LxmlError, ValueError) as exc:
        raise MalformedInput(f"malformed XML: {exc}") from exc
    if root is None:  # lxml returns None for some recoverable oddities
        raise MalformedInput("malformed XML: no root element")
    _refuse_hostile_tree(root)
    return root


def _prolog_text(data: bytes) -> str:
    """The document text before the root element, decoded just enough to scan markup.

    UTF-16/32 (with or without BOM) is decoded; every other allowed encoding
    is ASCII-compatible, so Latin-1 maps its bytes 1:1 onto characters whose
    markup (``<!DOCTYPE``, ``<!ENTITY``) is exactly what the bytes spell.
    """
    head = data[:4]
    codec: str | None = None
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        codec = "utf-32"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16"
    elif head == b"<\x00\x00\x00":
        codec = "utf-32-le"
    elif head == b"\x00\x00\x00<":
        codec = "utf-32-be"
    elif head[:2] == b"<\x00":
        codec = "utf-16-le"
    elif head[:2] == b"\x00<":
        codec = "utf-16-be"
    elif head == b"\x4c\x6f\xa7\x94":
        raise HostileInput("XML in EBCDIC: encoding not accepted")
    if codec is not None:
        text = data.decode(codec, errors="replace")
    else:
        text = data.decode("latin-1")
        if text.startswith("\u00ef\u00bb\u00bf"):  # UTF-8 BOM seen through Latin-1
            text = text[3:]
    decl = _XML_DECL_ENCODING.match(text)
    if decl and decl.group(1).strip().lower() not in ALLOWED_ENCODINGS:
        raise HostileInput(f"XML encoding {decl.group(1)!r} not accepted "
                           f"(allowed: UTF-8, ASCII, Latin-1, UTF-16/32)")
    match = _ROOT_START.search(text)
    return text[: match.start()] if match else text


def _refuse_hostile_prolog(prolog: str) -> None:
    """Raise :class:`HostileInput` when the prolog's DOCTYPE declares entities or an external id.

    The scan errs on the refusing side: a DOCTYPE whose internal subset merely
    mentions ``SYSTEM`` in a comment is refused too.  VOEvents carry no DOCTYPE.
    """
    start = prolog.find("<!DOCTYPE")
    if start < 0:
        return
    doctype = prolog[start:]
    entities = [("%" if pe else "") + name for pe, name in _ENTITY_DECL.findall(doctype)]
    if entities:
        shown = ", ".join(entities[:5]) + (f" (+{len(entities) - 5} more)"
                                            if len(entities) > 5 else "")
        raise HostileInput(f"XML DOCTYPE declares entities ({shown}): entity declarations "
                           "are refused unread")
    external = _EXTERNAL_ID.search(doctype)
    if external:
        target = external.group(2) or "(no literal)"
        raise HostileInput(f"XML DOCTYPE names an external DTD or entity ({external.group(1)} "
                           f"{target}): external identifiers are refused unread")


def _refuse_hostile_tree(root: etree._Element) -> None:
    """Second line of defence: refuse a parsed tree that still holds entities or a DTD id."""
    docinfo = root.getroottree().docinfo
    if docinfo.system_url or docinfo.public_id:
        raise HostileInput(f"XML DOCTYPE names an external DTD ({docinfo.system_url or ''} "
                           f"{docinfo.public_id or ''}".rstrip() + ")")
    dtd = docinfo.internalDTD
    if dtd is not None:
        names = [str(entity.name) for entity in dtd.iterentities()]
        if names:
            raise HostileInput(f"XML DOCTYPE declares entities ({', '.join(names[:5])})")
    for node in root.iter(etree.Entity):
        raise HostileInput(f"XML holds an unresolved entity reference {node.text}")

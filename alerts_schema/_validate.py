"""Load the JSON Schemas shipped with the package and validate documents against them.

Two validators compile each schema: fastjsonschema answers "is it valid?" on
the hot path (about 20 us per Alert here, against 800 us for jsonschema), and
jsonschema explains a failure with every violation and its JSON path.  The
schema tests check the two agree.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from fastjsonschema import JsonSchemaException
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from alerts_schema.errors import SchemaValidationError
from alerts_schema.model import UTC_DATETIME_PATTERN

SCHEMA_NAMES = ("alert", "coincidence", "trigger")


_format_checker = FormatChecker(formats=())


@_format_checker.checks("date-time")
def _is_utc_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    # Offsets other than Z are normalized by the listeners before a document
    # reaches the contract.
    if not UTC_DATETIME_PATTERN.match(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])  # 2026-02-30 and friends
    except ValueError:
        return False
    return True


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed JSON Schema ``name`` (one of :data:`SCHEMA_NAMES`).

    The dict is shared (cached): copy it before changing anything in it.
    """
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files("alerts_schema").joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _registry() -> Registry:
    return Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES
    )


@cache
def validator(name: str) -> Draft202012Validator:
    """A compiled validator for schema ``name``, with date-time format checking on."""
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry(), format_checker=_format_checker)


@cache
def fast_validator(name: str) -> Callable[[Any], Any]:
    """A fastjsonschema function for schema ``name``; raises JsonSchemaException if invalid."""
    # fastjsonschema rewrites the $refs of the dicts it is given in place;
    # hand it copies so the cached schemas everyone else reads stay intact.
    by_id = {load_schema(n)["$id"]: load_schema(n) for n in SCHEMA_NAMES}
    return fastjsonschema.compile(
        copy.deepcopy(load_schema(name)),
        handlers={"https": lambda uri: copy.deepcopy(by_id[uri])},
        formats={"date-time": _is_utc_date_time})


def is_valid(name: str, document: Any) -> bool:
    """Whether ``document`` follows schema ``name`` (the fast path)."""
    try:
        fast_validator(name)(document)
    except JsonSchemaException:
        return False
    return True


def validation_errors(name: str, document: Any) -> list[str]:
    """Every violation of schema ``name`` in ``document``, one line each, sorted by path."""
    if is_valid(name, document):
        return []
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(map(str, e.path)))
    return [f"{e.json_path}: {e.message}" for e in errors]


def validate(name: str, document: Any) -> None:
    """Raise :class:`~alerts_schema.errors.SchemaValidationError` unless ``document``
    follows ``name``."""
    errors = validation_errors(name, document)
    if errors:
        raise SchemaValidationError(name, errors)


def example_paths(name: str) -> list[Any]:
    """The example documents shipped for schema ``name`` (files ``<name>-*.example.json``)."""
    folder = resources.files("alerts_schema").joinpath("examples")
    return sorted(
        (p for p in folder.iterdir() if p.name.startswith(f"{name}-") and
         p.name.endswith(".example.json")),
        key=lambda p: p.name,
    )

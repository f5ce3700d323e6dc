"""The contract's JSON Schemas as OpenAPI 3.1 components, for the HTTP API's description."""

from __future__ import annotations

import copy
import json
from typing import Any

from alerts_schema._validate import load_schema

_COMPONENT_NAMES = {"alert": "Alert", "coincidence": "Coincidence", "trigger": "Trigger"}


def components(schema_name: str) -> dict[str, Any]:
    """OpenAPI components of one schema: the schema itself and each of its ``$defs``.

    The schema is named ``Alert``, ``Coincidence`` or ``Trigger``; a ``$defs``
    entry ``X`` becomes ``AlertX`` (and so on), with every ``$ref`` rewritten
    to ``#/components/schemas/...``.  A reference into another schema file is
    replaced by the part of that schema it points to.
    """
    prefix = _COMPONENT_NAMES[schema_name]
    schema = copy.deepcopy(load_schema(schema_name))
    _inline_external_refs(schema)
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    text = json.dumps({prefix: schema, **{f"{prefix}{k}": v for k, v in defs.items()}})
    components: dict[str, Any] = json.loads(
        text.replace('"#/$defs/', f'"#/components/schemas/{prefix}'))
    return components


def _inline_external_refs(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#") and ".schema.json#/" in ref:
            filename, pointer = ref.split("#", 1)
            target: Any = load_schema(filename.removesuffix(".schema.json"))
            for part in pointer.strip("/").split("/"):
                target = target[part]
            del node["$ref"]
            node.update(copy.deepcopy(target))
        for value in node.values():
            _inline_external_refs(value)
    elif isinstance(node, list):
        for value in node:
            _inline_external_refs(value)

"""The JSON-schema subset that function tools use: type, properties, required, enum, items, additionalProperties.

`schema_problem(value, schema)` is the first way `value` breaks `schema` as one line naming the path
(`arguments.limit: expected integer, got "ten"`), or None. Keywords outside the subset (descriptions, formats,
minimum, ...) are not checked: a client's schema may carry them, and refusing a call over a keyword we do not
implement would be wrong both ways. `check_schema` refuses, up front, a schema whose subset keywords are ill-formed.

(The `jsonschema` package does all of draft 2020-12 but brings four packages, one of them compiled, for what is here
thirty lines.)
"""

from __future__ import annotations

import json
from typing import Any

TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def declared_types(schema: Any) -> list[str]:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []


def check_schema(schema: Any, path: str) -> None:
    """Raise ValueError naming `path` when the subset keywords of `schema` are ill-formed."""
    if not isinstance(schema, dict):
        raise ValueError(f"{path} must be a JSON schema object")
    for kind in declared_types(schema):
        if kind not in TYPES:
            raise ValueError(f"{path}.type: unknown type {kind!r} ({', '.join(TYPES)})")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{path}.enum must be a list")
    required = schema.get("required", [])
    if not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise ValueError(f"{path}.required must be a list of property names")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{path}.properties must be an object")
    for name, sub in properties.items():
        check_schema(sub, f"{path}.properties.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")


def schema_problem(value: Any, schema: dict[str, Any], path: str = "arguments") -> str | None:
    """The first way `value` breaks `schema` (the subset above), or None."""
    kinds = declared_types(schema)
    if kinds and not any(TYPES[k](value) for k in kinds):
        return f"{path}: expected {' or '.join(kinds)}, got {json.dumps(value)[:60]}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {json.dumps(value)[:60]} is not one of {json.dumps(schema['enum'])[:120]}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return f"{path}: missing required property {name!r}"
        for name, item in value.items():
            if name in properties:
                problem = schema_problem(item, properties[name], f"{path}.{name}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{path}: unknown property {name!r} (properties: {', '.join(properties) or 'none'})"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    return None

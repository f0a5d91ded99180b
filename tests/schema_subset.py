"""A small JSON Schema checker for exactly the keywords our shipped schemas use.

The real check is `jsonschema` (edge.messages.validate_message, a dev dependency). This subset lets the
schema tests run where jsonschema is not installed; `test_schema_uses_only_checked_keywords` fails if a
schema grows a keyword this file does not understand, so it can never pass a message silently.
"""
from __future__ import annotations

import re
from typing import Any

CHECKED = {"type", "const", "enum", "required", "properties", "additionalProperties", "pattern", "minimum",
           "maximum", "minLength", "maxLength", "oneOf", "allOf", "not", "if", "then", "else", "$ref", "items",
           "minItems", "uniqueItems"}
ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "format", "contentEncoding",
               "contentMediaType"}


def keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a schema."""
    if not isinstance(schema, dict):
        return set()
    out = set(schema)
    for key in ("properties", "$defs"):
        for sub in schema.get(key, {}).values():
            out |= keywords(sub)
    for key in ("allOf", "oneOf"):
        for sub in schema.get(key, []):
            out |= keywords(sub)
    for key in ("not", "if", "then", "else", "additionalProperties", "items"):
        out |= keywords(schema.get(key))
    return out


def _is(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "object": dict, "array": list}[t])


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def errors(schema: dict[str, Any] | bool, inst: Any, root: dict[str, Any] | None = None, path: str = "") -> list[str]:
    where = path or "(top)"
    if isinstance(schema, bool):  # `true` allows anything, `false` nothing (e.g. a property a branch forbids)
        return [] if schema else [f"{where}: not allowed here"]
    root = root if root is not None else schema
    out: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        out += errors(root["$defs"][ref[len("#/$defs/"):]], inst, root, path)
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is(inst, t) for t in types):
            return out + [f"{where}: {inst!r} is not of type {schema['type']}"]
    if "const" in schema and not _same(inst, schema["const"]):
        out.append(f"{where}: {inst!r} != {schema['const']!r}")
    if "enum" in schema and not any(_same(inst, e) for e in schema["enum"]):
        out.append(f"{where}: {inst!r} not in {schema['enum']}")
    if isinstance(inst, dict):
        out += [f"{where}: {k!r} is required" for k in schema.get("required", []) if k not in inst]
        props = schema.get("properties", {})
        for k, v in inst.items():
            if k in props:
                out += errors(props[k], v, root, f"{path}/{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{where}: additional property {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], v, root, f"{path}/{k}")
    if isinstance(inst, str):
        if "pattern" in schema and not re.search(schema["pattern"], inst):
            out.append(f"{where}: {inst!r} does not match {schema['pattern']}")
        if len(inst) < schema.get("minLength", 0) or len(inst) > schema.get("maxLength", float("inf")):
            out.append(f"{where}: length {len(inst)} out of bounds")
    if isinstance(inst, list):
        if len(inst) < schema.get("minItems", 0):
            out.append(f"{where}: {len(inst)} items, fewer than {schema['minItems']}")
        if schema.get("uniqueItems") and len({repr(v) for v in inst}) < len(inst):
            out.append(f"{where}: items repeat")
        if "items" in schema:
            for k, v in enumerate(inst):
                out += errors(schema["items"], v, root, f"{path}/{k}")
    if _is(inst, "number"):
        if inst < schema.get("minimum", float("-inf")) or inst > schema.get("maximum", float("inf")):
            out.append(f"{where}: {inst} out of bounds")
    for sub in schema.get("allOf", []):
        out += errors(sub, inst, root, path)
    if "oneOf" in schema:
        n = sum(not errors(sub, inst, root, path) for sub in schema["oneOf"])
        if n != 1:
            out.append(f"{where}: matches {n} of oneOf, not exactly 1")
    if "not" in schema and not errors(schema["not"], inst, root, path):
        out.append(f"{where}: matches a 'not' schema")
    if "if" in schema:
        branch = "then" if not errors(schema["if"], inst, root, path) else "else"
        if branch in schema:
            out += errors(schema[branch], inst, root, path)
    return out

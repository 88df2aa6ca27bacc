"""A small JSON Schema (2020-12) validator for the keywords Kubernetes' schemas use.

Why not the jsonschema package: importing it (with referencing, attrs, rpds) takes about 120 ms,
more than loading and checking a pod, and every `podkit run` would pay it. The Kubernetes
schemas use only type, properties, additionalProperties, required, items, enum, oneOf and $ref,
whose meaning is small and exact. Meeting any other keyword raises UnknownKeyword, and the
caller falls back to jsonschema. tests/test_manifest.py checks that both report the same errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from podkit.manifest.document import FieldPath

# Keywords that assert nothing: jsonschema does not check "format" unless asked to either.
_ANNOTATIONS = {"description", "format", "$schema", "$id", "default", "title"}
_KNOWN = _ANNOTATIONS | {
    "$ref",
    "$defs",
    "type",
    "properties",
    "additionalProperties",
    "required",
    "items",
    "enum",
    "oneOf",
}
_REF_PREFIX = "#/$defs/"

Schema = dict[str, Any]
Errors = Iterator["SchemaError"]


@dataclass(frozen=True)
class SchemaError:
    """One failed keyword, shaped like jsonschema's ValidationError where we use it."""

    path: FieldPath  # of the instance, from the document root
    validator: str  # the keyword that failed
    instance: Any
    validator_value: Any
    schema: Schema  # the (sub)schema holding the keyword
    message: str


class UnknownKeyword(Exception):
    """The schema uses a keyword this module does not implement: use jsonschema instead."""


class Validator:
    """Validates instances against a kind's schema whose $refs point into the definitions."""

    def __init__(self, schema: Schema, definitions: dict[str, Any]) -> None:
        self._schema = schema
        self._defs = definitions
        self._keywords = {
            "type": self._type,
            "properties": self._properties,
            "additionalProperties": self._additional_properties,
            "required": self._required,
            "items": self._items,
            "enum": self._enum,
            "oneOf": self._one_of,
        }

    def iter_errors(self, instance: Any) -> Iterator[SchemaError]:
        yield from self._errors(instance, self._schema, ())

    def is_valid(self, instance: Any, schema: Schema) -> bool:
        return next(self._errors(instance, schema, ()), None) is None

    def _errors(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        unknown = [k for k in schema.keys() - _KNOWN if not k.startswith("x-kubernetes-")]
        if unknown:
            raise UnknownKeyword(", ".join(sorted(unknown)))
        ref = schema.get("$ref")
        if ref is not None:
            if _REF_PREFIX not in ref:
                raise UnknownKeyword(f"$ref {ref}")  # only references into the definitions
            yield from self._errors(instance, self._defs[ref.split(_REF_PREFIX, 1)[1]], path)
        for keyword, check in self._keywords.items():
            if keyword in schema:
                yield from check(instance, schema, path)

    def _error(
        self, keyword: str, instance: Any, schema: Schema, path: FieldPath, message: str
    ) -> SchemaError:
        return SchemaError(path, keyword, instance, schema[keyword], schema, message)

    def _type(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        types = schema["type"]
        types = [types] if isinstance(types, str) else types
        if not any(is_type(instance, t) for t in types):
            message = f"{instance!r} is not of type {', '.join(repr(t) for t in types)}"
            yield self._error("type", instance, schema, path, message)

    def _properties(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        if isinstance(instance, dict):
            for name, sub in schema["properties"].items():
                if name in instance:
                    yield from self._errors(instance[name], sub, path + (name,))

    def _additional_properties(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        if not isinstance(instance, dict):
            return
        known = schema.get("properties", {})
        extras = [key for key in instance if key not in known]
        rule = schema["additionalProperties"]
        if rule is False and extras:
            message = f"Additional properties are not allowed ({extras!r} were unexpected)"
            yield self._error("additionalProperties", instance, schema, path, message)
        elif isinstance(rule, dict):
            for key in extras:
                yield from self._errors(instance[key], rule, path + (key,))

    def _required(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        if isinstance(instance, dict):
            for name in schema["required"]:
                if name not in instance:
                    message = f"{name!r} is a required property"
                    yield self._error("required", instance, schema, path, message)

    def _items(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        if isinstance(instance, list):
            for index, item in enumerate(instance):
                yield from self._errors(item, schema["items"], path + (index,))

    def _enum(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        if not any(_equal(instance, value) for value in schema["enum"]):
            message = f"{instance!r} is not one of {schema['enum']!r}"
            yield self._error("enum", instance, schema, path, message)

    def _one_of(self, instance: Any, schema: Schema, path: FieldPath) -> Errors:
        matches = sum(self.is_valid(instance, sub) for sub in schema["oneOf"])
        if matches == 0:
            message = f"{instance!r} is not valid under any of the given schemas"
            yield self._error("oneOf", instance, schema, path, message)
        elif matches > 1:
            message = f"{instance!r} is valid under each of the given schemas"
            yield self._error("oneOf", instance, schema, path, message)


def is_type(instance: Any, name: str) -> bool:
    """JSON types as jsonschema sees Python values: bools are not numbers, 1.0 is an integer."""
    if name == "null":
        return instance is None
    if name == "boolean":
        return isinstance(instance, bool)
    if isinstance(instance, bool):
        return False
    if name == "integer":
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    if name == "number":
        return isinstance(instance, int | float)
    if name == "string":
        return isinstance(instance, str)
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    return False


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)

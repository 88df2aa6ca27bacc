"""Validation against the official Kubernetes JSON schemas bundled with kubernetes-validate.

We use its strict schemas (unknown fields are errors, so `imagee:` is caught) for the newest
Kubernetes version it ships, and collect every error, not only the first as its validate() does.
Schemas are loaded once per process and validators built once per kind. The validator is
podkit.manifest.validator (fast to import); jsonschema is the fallback for schemas using
keywords that module does not know.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from podkit.manifest.document import FieldPath, Manifest
from podkit.manifest.errors import Problem
from podkit.manifest.validator import SchemaError, UnknownKeyword, Validator

_SCHEMA_FILES = {
    "Pod": "pod-v1.json",
    "ConfigMap": "configmap-v1.json",
    "Secret": "secret-v1.json",
    "Namespace": "namespace-v1.json",
    "ServiceAccount": "serviceaccount-v1.json",
    "Service": "service-v1.json",
}
_STRICT_DIR = re.compile(r"v(\d+)\.(\d+)\.(\d+)-local-strict\Z")


@cache
def _schema_dir() -> Path:
    """kubernetes-validate's strict schemas for the newest Kubernetes version it bundles.

    Found by listing its package data rather than importing kubernetes_validate.utils, whose
    imports (jsonschema, packaging) cost more than the whole validation.
    """
    spec = importlib.util.find_spec("kubernetes_validate")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed")
    root = Path(spec.submodule_search_locations[0]) / "kubernetes-json-schema"
    versions = {}
    for entry in root.iterdir():
        match = _STRICT_DIR.match(entry.name)
        if match:
            versions[tuple(int(n) for n in match.groups())] = entry
    return versions[max(versions)]


def _load(name: str) -> Any:
    return orjson.loads((_schema_dir() / name).read_bytes())


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podkit"


@cache
def _definitions() -> dict[str, Any]:
    """_definitions.json cut to what the kinds podkit validates refer to: 138 of its 862
    definitions, 0.24 of 1.8 MB. Parsing the whole file took 10 ms of every `podkit run`; the
    cut is kept in a cache file named after the source file's path, size and mtime, so a new
    kubernetes-validate makes a new one."""
    source = _schema_dir() / "_definitions.json"
    st = source.stat()
    files = ",".join(sorted(_SCHEMA_FILES.values()))
    tag = f"{zlib.crc32(f'{source}:{files}'.encode()):08x}-{st.st_size}-{st.st_mtime_ns}"
    cached = _cache_dir() / f"k8s-definitions-{tag}.json"
    try:
        return orjson.loads(cached.read_bytes())  # type: ignore[no-any-return]
    except (OSError, orjson.JSONDecodeError):
        pass
    full = orjson.loads(source.read_bytes())
    roots = [_load(name) for name in _SCHEMA_FILES.values()]
    doc = {**full, "$defs": reachable(full["$defs"], roots)}
    try:  # a cache that cannot be written only costs the next run the same 10 ms
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(doc))
        tmp.replace(cached)
    except OSError:
        pass
    return doc


@cache
def openapi_schemas(kinds: tuple[tuple[str, str, str], ...]) -> dict[str, Any]:
    """components.schemas of an OpenAPI v3 document for the (group, version, kind)s given, from
    the same _definitions.json that validation uses: the kinds' definitions (which carry their
    x-kubernetes-group-version-kind, and the strategic-merge metadata on their lists) and all
    they refer to, with $refs pointing into components and JSON Schema's type lists written as
    OpenAPI 3.0's type and nullable."""
    full = _all_definitions()["$defs"]
    wanted = {tuple(k) for k in kinds}
    roots = [
        {"$ref": f"#/$defs/{name}"}
        for name, d in full.items()
        if any(
            (g.get("group", ""), g.get("version", ""), g.get("kind", "")) in wanted
            for g in d.get("x-kubernetes-group-version-kind", [])
        )
    ]
    return {name: _openapi3(d) for name, d in reachable(full, roots).items()}


@cache
def _all_definitions() -> dict[str, Any]:
    """The whole _definitions.json, for the API's kinds beyond the manifests' (podkit serve
    reads it once)."""
    return orjson.loads((_schema_dir() / "_definitions.json").read_bytes())  # type: ignore[no-any-return]


def _schema_of(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A schema and the definitions document its $refs point into. `key` is a kind podkit
    run validates (Pod) or a schema file's name (event-events-v1.json), as the API names
    them: kinds of different groups share names."""
    name = _SCHEMA_FILES.get(key, key)
    cut = name in _SCHEMA_FILES.values()
    return _load(name), (_definitions() if cut else _all_definitions())


def kind_definition(key: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The kind's schema and the definitions it refers to (for strategic merge: their patch
    metadata); None for a kind without a schema file."""
    if not key:
        return None, _definitions()["$defs"]
    root, defs = _schema_of(key)
    return root, defs["$defs"]


def _openapi3(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi3(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi3(v) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and "/$defs/" in ref:
        out["$ref"] = "#/components/schemas/" + ref.rsplit("/", 1)[1]
    kind = out.get("type")
    if isinstance(kind, list):
        real = [t for t in kind if t != "null"]
        if len(real) == 1:
            out["type"] = real[0]
        if "null" in kind:
            out["nullable"] = True
    return out


def reachable(definitions: dict[str, Any], roots: list[Any]) -> dict[str, Any]:
    """The definitions that `roots` reach through $ref, directly or not."""
    found: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and "/$defs/" in ref:
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found[name] = definitions[name]
                    todo.append(found[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


_validators: dict[str, Validator | _JsonschemaValidator] = {}


def _validator(kind: str) -> Validator | _JsonschemaValidator:
    if kind not in _validators:
        root, defs = _schema_of(kind)
        _validators[kind] = Validator(root, defs["$defs"])
    return _validators[kind]


def _errors(kind: str, instance: dict[str, Any]) -> list[SchemaError]:
    try:
        return list(_validator(kind).iter_errors(instance))
    except UnknownKeyword:
        _validators[kind] = _JsonschemaValidator(*_schema_of(kind))
        return list(_validators[kind].iter_errors(instance))


class _JsonschemaValidator:
    """The jsonschema package, for schemas beyond podkit.manifest.validator's keywords."""

    def __init__(self, schema: dict[str, Any], definitions: dict[str, Any]) -> None:
        import jsonschema
        from referencing import Registry, Resource

        resources = [(doc["$id"], Resource.from_contents(doc)) for doc in (schema, definitions)]
        registry = Registry().with_resources(resources)
        self._validator = jsonschema.Draft202012Validator(schema, registry=registry)

    def iter_errors(self, instance: Any) -> Iterator[SchemaError]:
        for e in self._validator.iter_errors(instance):
            path = tuple(e.absolute_path)
            yield SchemaError(path, e.validator, e.instance, e.validator_value, e.schema, e.message)


@dataclass(frozen=True)
class SchemaResult:
    problems: list[Problem]  # in line order, one per field
    rejected: list[FieldPath]  # fields holding a value the schema rejects

    def pruned(self, manifest: Manifest) -> Manifest:
        """The manifest without the rejected values, so later checks only see valid types."""
        if not self.rejected:
            return manifest
        data = copy.deepcopy(manifest.data)
        for path in self.rejected:
            _remove(data, path)
        return Manifest(manifest.source, data, manifest.lines, manifest.prefix)


def schema_key(api_version: str, kind: str) -> str:
    """The official schema file of any kind: pod-v1.json, deployment-apps-v1.json."""
    group, _, version = api_version.rpartition("/")
    if group:
        return f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    return f"{kind.lower()}-{version}.json"


def has_schema(key: str) -> bool:
    return (_schema_dir() / _SCHEMA_FILES.get(key, key)).is_file()


def check_schema(manifest: Manifest, key: str | None = None) -> SchemaResult:
    """Every way the object breaks its kind's schema (`key`: a schema file's name, for the
    kinds podkit run does not take)."""
    problems: list[Problem] = []
    rejected: list[FieldPath] = []
    for error in _errors(key or manifest.kind, manifest.data):
        path: FieldPath = error.path
        for rel, reason in _describe(error):
            problems.append(manifest.problem(path + rel, reason))
            if error.validator != "required":
                rejected.append(path + rel)
    unique = list(dict.fromkeys(problems))  # `required` is reported once per missing field
    return SchemaResult(sorted(unique, key=lambda p: (p.line or 0, p.path)), rejected)


def field_problems(
    kind: str, data: dict[str, Any]
) -> tuple[list[FieldPath], list[FieldPath], list[str]]:
    """For the API's fieldValidation: the paths of the unknown fields, those of the missing
    required ones, and every other problem ("path: reason"), of an object of `kind` (a kind
    or a schema file's name) against its official schema."""
    unknown: list[FieldPath] = []
    missing: list[FieldPath] = []
    other: list[str] = []
    for error in _errors(kind, data):
        for rel, reason in _describe(error):
            path = (*error.path, *rel)
            if error.validator == "additionalProperties":
                unknown.append(path)
            elif error.validator == "required":
                missing.append(path)
            else:
                other.append(f"{dotted(path)}: {reason}")
    return list(dict.fromkeys(unknown)), list(dict.fromkeys(missing)), list(dict.fromkeys(other))


def dotted(path: FieldPath) -> str:
    """spec.containers[0].name, as the apiserver's messages write a field path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def prune(data: Any, path: FieldPath) -> None:
    """Drops the field at path (an unknown one: fieldValidation Ignore and Warn drop them, as
    the apiserver's decoding does)."""
    _remove(data, path)


def _remove(data: Any, path: FieldPath) -> None:
    """Drop the value at path: a mapping loses the key, a list item becomes null (indices stay)."""
    parent = data
    for elem in path[:-1]:
        try:
            parent = parent[elem]
        except (KeyError, IndexError, TypeError):
            return  # an ancestor was removed already
    if not path:
        return
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = None


def _describe(error: SchemaError) -> list[tuple[FieldPath, str]]:
    """(path below the error's instance, reason) pairs in words a manifest author knows."""
    kind, instance, expected = error.validator, error.instance, error.validator_value
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = list(error.schema.get("properties", {}))
        return [((key,), _unknown_field(key, known)) for key in instance if key not in known]
    if kind == "required" and isinstance(instance, dict):
        return [((key,), "required field is missing") for key in expected if key not in instance]
    if kind == "type":
        return [((), _wrong_type(instance, _types(expected)))]
    if kind == "enum":
        allowed = ", ".join(_show(v) for v in expected if v is not None)
        return [((), f"{_show(instance)} is not one of {allowed}")]
    if kind == "oneOf":
        types = [t for sub in expected for t in _types(sub.get("type", []))]
        return [((), _wrong_type(instance, types))]
    return [((), error.message)]


def _unknown_field(key: str, known: list[str]) -> str:
    import difflib  # only needed when something is wrong: not paid on every start

    guess = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    hint = f' (did you mean "{guess[0]}"?)' if guess else ""
    return f'unknown field "{key}"{hint}'


def _types(expected: str | list[str]) -> list[str]:
    """Schema types without "null": every Kubernetes field may be null, saying so is noise."""
    types = [expected] if isinstance(expected, str) else list(expected)
    return [t for t in types if t != "null"]


def _wrong_type(instance: Any, types: list[str]) -> str:
    names = " or ".join(f"'{t}'" for t in types)
    if isinstance(instance, dict | list):
        return f"expected {names}, got {_show(instance)}"
    reason = f"{_show(instance)} is not of type {names}"
    if "string" in types and isinstance(instance, bool | int | float):
        reason += " (put it in quotes)"
    return reason


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)

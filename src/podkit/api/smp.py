"""Strategic merge patch, as k8s.io/apimachinery's strategicpatch applies it; pure functions.

It is a JSON merge patch, except where the schema says otherwise. A list whose field carries
`x-kubernetes-patch-strategy: merge` is merged, not replaced:
- a list of maps by its `x-kubernetes-patch-merge-key` (a pod's containers by name, a
  container's ports by containerPort): a patch item changes the item with the same key, or is
  added;
- a list of primitives (finalizers) as a set union.
The directives kubectl sends:
- `$patch: delete` on a list item or a map, and `$patch: replace` on a map;
- `$setElementOrder/<list>`: the order of a merged list;
- `$deleteFromPrimitiveList/<list>`: values to remove;
- `$retainKeys`: the only keys a map keeps.
The schemas (and their patch metadata) are the kubernetes-validate definitions that
validation uses.
"""

from __future__ import annotations

import copy
from typing import Any

from podkit.api.patch import PatchError

Schema = dict[str, Any]
_ORDER, _DELETE_FROM = "$setElementOrder/", "$deleteFromPrimitiveList/"


def apply(target: Any, patch: Any, schema: Schema | None, defs: dict[str, Schema]) -> Any:
    """`target` with `patch` applied; None when the patch deletes it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    schema = _resolve(schema, defs)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _clean({k: v for k, v in patch.items() if not k.startswith("$")})
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch directive: $patch: {directive}")
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        field = _property(schema, key, defs)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and field is not None and _merges(field):
            result[key] = _merge_list(result.get(key) or [], value, field, defs)
        else:
            merged = apply(result.get(key), value, field, defs)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM) and isinstance(value, list):
            name = key[len(_DELETE_FROM) :]
            result[name] = [v for v in result.get(name) or [] if v not in value]
        elif key.startswith(_ORDER) and isinstance(value, list):
            name = key[len(_ORDER) :]
            merge_key = (_property(schema, name, defs) or {}).get("x-kubernetes-patch-merge-key")
            if name in result:
                result[name] = _ordered(result[name], value, merge_key)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(
    current: list[Any], items: list[Any], field: Schema, defs: dict[str, Schema]
) -> list[Any]:
    key = field.get("x-kubernetes-patch-merge-key")
    merged = copy.deepcopy(current)
    if key is None:  # a set of primitives: union, in order
        return merged + [v for v in items if v not in merged]
    item_schema = field.get("items")
    for item in items:
        if not isinstance(item, dict):
            raise PatchError(f"a list merged by {key} takes maps, not {item!r}")
        at = next(
            (
                i
                for i, x in enumerate(merged)
                if isinstance(x, dict) and x.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if at is not None:
                merged.pop(at)
        elif at is None:
            merged.append(apply({}, item, item_schema, defs))
        else:
            merged[at] = apply(merged[at], item, item_schema, defs)
    return merged


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """items in `order` (values, or {key: value} maps); others keep their place after them."""

    def ident(x: Any) -> Any:
        return x.get(key) if key is not None and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    first = sorted((x for x in items if ident(x) in wanted), key=lambda x: wanted.index(ident(x)))
    return first + [x for x in items if ident(x) not in wanted]


def _merges(field: Schema | None) -> bool:
    strategy = (field or {}).get("x-kubernetes-patch-strategy", "")
    return "merge" in strategy.split(",")


def _property(schema: Schema | None, key: str, defs: dict[str, Schema]) -> Schema | None:
    schema = _resolve(schema, defs)
    if schema is None:
        return None
    found = (schema.get("properties") or {}).get(key)
    if found is None and isinstance(schema.get("additionalProperties"), dict):
        found = schema["additionalProperties"]
    return found if isinstance(found, dict) else None


def _resolve(schema: Schema | None, defs: dict[str, Schema]) -> Schema | None:
    while schema is not None and "$ref" in schema:
        resolved = defs.get(str(schema["$ref"]).rsplit("/", 1)[1])
        if resolved is None:
            return None
        schema = {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _clean(value: Any) -> Any:
    """A replacement value without directives or nulls."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value

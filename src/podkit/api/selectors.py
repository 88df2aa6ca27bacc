"""Label and field selectors as the apiserver parses them, pure functions.

Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists), `!a` (absent),
joined by commas (all must hold). Fields, with `=`, `==` or `!=`: the ones kubectl sends
(metadata.name and metadata.namespace for every kind, spec.nodeName and status.phase for
pods, involvedObject.* for `kubectl describe`'s events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SET = re.compile(r"([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)")
_KEY = re.compile(r"[A-Za-z0-9_./-]+")
FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.fieldPath",
    "reason",
    "type",
)


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # in, notin, exists, absent (= is in with one value, != is notin)
    values: frozenset[str] = frozenset()

    def holds(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "absent":
            return value is None
        return (value in self.values) == (self.op == "in")


def _split(text: str) -> list[str]:
    """Splits on the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_labels(text: str) -> list[Requirement]:
    found: list[Requirement] = []
    for term in _split(text or ""):
        if m := _SET.fullmatch(term):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            found.append(Requirement(m[1], m[2], values))
        elif "!=" in term or "=" in term:
            found.append(_equality(term))
        elif term.startswith("!") and _KEY.fullmatch(term[1:].strip()):
            found.append(Requirement(term[1:].strip(), "absent"))
        elif _KEY.fullmatch(term):
            found.append(Requirement(term, "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return found


def parse_fields(text: str) -> list[Requirement]:
    found = [_equality(term) for term in _split(text or "")]
    for r in found:
        if r.key not in FIELDS:
            raise SelectorError(f'field label not supported: "{r.key}"')
    return found


def _equality(term: str) -> Requirement:
    negate = "!=" in term
    key, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
    if not _KEY.fullmatch(key.strip()):
        raise SelectorError(f"unable to parse requirement: {term!r}")
    return Requirement(key.strip(), "notin" if negate else "in", frozenset([value.strip()]))


def matches(
    obj: dict[str, Any], label_reqs: list[Requirement], field_reqs: list[Requirement]
) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    if not all(r.holds(labels.get(r.key)) for r in label_reqs):
        return False
    return all(r.holds(_field(obj, r.key)) for r in field_reqs)


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)

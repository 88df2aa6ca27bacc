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
    if not labels_match(label_reqs, obj.get("metadata", {}).get("labels")):
        return False
    return all(r.holds(_field(obj, r.key)) for r in field_reqs)


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "absent"}


def from_label_selector(selector: dict[str, Any] | None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels, matchExpressions) as requirements, all of which
    must hold (an empty selector holds for everything)."""
    selector = selector or {}
    found = [
        Requirement(k, "in", frozenset([str(v)]))
        for k, v in sorted((selector.get("matchLabels") or {}).items())
    ]
    for e in selector.get("matchExpressions") or []:
        op = _OPERATORS.get(e.get("operator", ""))
        if op is None:
            raise SelectorError(f'"{e.get("operator")}" is not a valid label selector operator')
        found.append(Requirement(e["key"], op, frozenset(map(str, e.get("values") or []))))
    return found


def selector_text(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as its string form (`app=web,tier in (a,b)`), as the apiserver writes
    it in a Scale's status.selector and kubectl in its SELECTOR column."""
    terms = []
    for r in sorted(from_label_selector(selector), key=lambda r: r.key):
        values = ",".join(sorted(r.values))
        if r.op == "in" and len(r.values) == 1:
            terms.append(f"{r.key}={values}")
        elif r.op in ("in", "notin"):
            terms.append(f"{r.key} {r.op} ({values})")
        else:
            terms.append(r.key if r.op == "exists" else f"!{r.key}")
    return ",".join(terms)


def labels_match(requirements: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.holds(labels.get(r.key)) for r in requirements)

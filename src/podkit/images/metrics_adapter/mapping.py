"""The app's status document -> metric families, by the config's rules. Pure: no I/O, and no
prometheus_client (render.py turns families into exposition text).

A rule's `path` selects nodes: its items (a selected list stands for its elements). Each item
makes one series (or one per `values` entry); its labels and value are read from the item when
the item is an object, else from the whole document (json_exporter's `type: object` and
`type: value`, which can also be forced). What cannot be read (a missing key, a value that is
not a number) skips that one series and is reported as a Problem; the rest of the page stands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from podkit.images.metrics_adapter import selector
from podkit.images.metrics_adapter.selector import Selector

MetricType = Literal["gauge", "counter", "info", "untyped"]
Scope = Literal["auto", "item", "root"]

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_PREFIX = "metrics_adapter_"  # the adapter's own metrics (cache.py)


# --- label and value sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A label value: constant text, a selector, or text with `{selector}`s inside
    (json_exporter's `planet-{ .location }`)."""

    parts: tuple[str | Selector, ...]


def parse_template(text: str) -> Template:
    """Raises selector.SelectorError for a bad `{...}` inside."""
    stripped = text.strip()
    if stripped.startswith(("$", "@")):
        return Template((selector.compile(stripped),))
    parts: list[str | Selector] = []
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        end = _closing_brace(text, start)
        if end < 0:
            raise selector.SelectorError(
                f"invalid selector {text[start:]!r}: '{{' without a closing '}}' "
                "(a label with a {selector} inside is a template)"
            )
        if start > pos:
            parts.append(text[pos:start])
        parts.append(selector.compile(text[start : end + 1]))
        pos = end + 1
    if pos < len(text) or not parts:
        parts.append(text[pos:])
    return Template(tuple(parts))


def _closing_brace(text: str, start: int) -> int:
    quote = ""
    for i in range(start + 1, len(text)):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
        elif c in ("'", '"'):
            quote = c
        elif c == "}":
            return i
    return -1


ValueSource = float | Selector  # a constant (json_exporter's `active: 1`) or a selector


# --- rules ---------------------------------------------------------------------------------------


def family_name(name: str, typ: MetricType, unit: str) -> str:
    """The family's name as exposed: `_total` / `_info` belong to the samples, the unit is a
    suffix (OpenMetrics requires it)."""
    if typ == "counter" and name.endswith("_total"):
        name = name[: -len("_total")]
    if typ == "info" and name.endswith("_info"):
        name = name[: -len("_info")]
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    return name


@dataclass(frozen=True)
class Rule:
    """One configured metric, compiled. `values` (json_exporter) makes one family per entry,
    named `<name>_<key>`; otherwise `value` (a selector read from the item) or the item itself
    is the value."""

    name: str
    path: Selector
    type: MetricType = "gauge"
    help: str = ""
    unit: str = ""
    labels: tuple[tuple[str, Template], ...] = ()
    value: ValueSource | None = None
    values: tuple[tuple[str, ValueSource], ...] = ()
    value_map: dict[str, float] = field(default_factory=dict)
    scope: Scope = "auto"

    def outputs(self) -> list[tuple[str, ValueSource | None]]:
        """(family name, value source) for every family this rule feeds."""
        if self.values:
            return [
                (family_name(f"{self.name}_{key}", self.type, self.unit), src)
                for key, src in self.values
            ]
        return [(family_name(self.name, self.type, self.unit), self.value)]

    @property
    def description(self) -> str:
        return self.help or f"{self.path} in the app's status."


# --- families ------------------------------------------------------------------------------------

SAMPLE_SUFFIX = {"counter": "_total", "info": "_info", "gauge": "", "untyped": ""}


@dataclass
class Family:
    name: str  # as exposed, without the sample suffix
    type: MetricType
    help: str
    unit: str = ""
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    @property
    def sample_name(self) -> str:
        return self.name + SAMPLE_SUFFIX[self.type]


@dataclass(frozen=True)
class Problem:
    metric: str  # the configured name
    reason: str


class _Skip(Exception):
    """This series cannot be made; the reason is the message."""


def map_document(rules: Sequence[Rule], data: Any) -> tuple[list[Family], list[Problem]]:
    """Every rule applied to `data`. Rules sharing a family name add to the same family (the
    config checked that they agree on type and unit); a repeated label set is kept once."""
    families: dict[str, Family] = {}
    seen: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    problems: list[Problem] = []
    for rule in rules:
        outputs = rule.outputs()
        for fname, _ in outputs:
            if fname not in families:
                families[fname] = Family(fname, rule.type, rule.description, rule.unit)
                seen[fname] = set()
        found = rule.path.find(data)
        if not found and not rule.path.many:
            problems.append(Problem(rule.name, f"no value at {rule.path}"))
            continue
        for item in _items(found):
            ctx = item if _reads_item(rule.scope, item) else data
            try:
                labels = _labels(rule, ctx)
            except _Skip as exc:
                problems.append(Problem(rule.name, str(exc)))
                continue
            for fname, source in outputs:
                try:
                    value = _value(rule, source, item, ctx)
                except _Skip as exc:
                    problems.append(Problem(rule.name, str(exc)))
                    continue
                key = tuple(labels.items())
                if key in seen[fname]:
                    problems.append(Problem(rule.name, f"repeated series {fname}{_show(labels)}"))
                    continue
                seen[fname].add(key)
                families[fname].samples.append((labels, value))
    return list(families.values()), problems


def _items(found: list[Any]) -> Iterable[Any]:
    for node in found:
        if isinstance(node, list):
            yield from node
        else:
            yield node


def _reads_item(scope: Scope, item: Any) -> bool:
    if scope == "auto":
        return isinstance(item, dict)
    return scope == "item"


def _labels(rule: Rule, ctx: Any) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name, template in rule.labels:
        out = []
        for part in template.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            found = part.find(ctx)
            if not found:
                raise _Skip(f"label {name}: no value at {part}")
            out.append(label_text(found[0]))
        labels[name] = "".join(out)
    if rule.type == "info" and not rule.labels and isinstance(ctx, dict):
        # An info metric without labels takes the object's plain fields as its labels.
        for key, value in ctx.items():
            if value is None or isinstance(value, dict | list):
                continue
            labels.setdefault(label_name(str(key)), label_text(value))
    return labels


def _value(rule: Rule, source: ValueSource | None, item: Any, ctx: Any) -> float:
    if rule.type == "info":
        return 1.0
    if isinstance(source, float):
        return source
    if source is None:
        raw = item
        where = str(rule.path)
    else:
        found = source.find(ctx)
        if not found:
            raise _Skip(f"no value at {source}")
        raw = found[0]
        where = str(source)
    number = to_number(raw, rule.value_map)
    if number is None:
        raise _Skip(f"value at {where} is not a number: {_short(raw)}")
    if rule.type == "counter" and (number < 0 or math.isnan(number)):
        raise _Skip(f"counter value at {where} must be 0 or more: {_short(raw)}")
    return number


_BOOL_TEXT = {"true": 1.0, "false": 0.0}


def to_number(raw: Any, value_map: dict[str, float] | None = None) -> float | None:
    """JSON numbers and booleans, numeric strings ("42", "1.5e3", "NaN", "+Inf"), "true" /
    "false", and strings named in `value_map`; None for anything else."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        if value_map and raw in value_map:
            return float(value_map[raw])
        text = raw.strip()
        try:
            return float(text)
        except ValueError:
            return _BOOL_TEXT.get(text.lower())
    return None


def label_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def label_name(key: str) -> str:
    """A key made into a valid label name: other characters become `_`."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key) or "_"
    if name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):
        name = "x" + name
    return name


def metric_name(key: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", key) or "_"
    return "_" + name if name[0].isdigit() else name


def _short(value: Any) -> str:
    text = label_text(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


# --- without rules: every number in the document ---------------------------------------------


def auto_families(data: Any) -> list[Family]:
    """With no `metrics` configured: each number or boolean reachable through objects is a
    gauge named after its path (`{"http": {"requests": 5}}` -> `http_requests 5`); numeric
    strings count too (key=value text). Lists are left out: they need a rule to be labelled."""
    out: dict[str, Family] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*path, str(key)])
            return
        if not path or isinstance(node, list):
            return
        number = to_number(node)
        if number is None:
            return
        name = metric_name("_".join(path))
        if name in out or name.startswith(RESERVED_PREFIX):
            return
        where = "$" + "".join(f"['{p}']" if not LABEL_NAME.fullmatch(p) else f".{p}" for p in path)
        family = Family(name, "gauge", f"{where} in the app's status.")
        family.samples.append(({}, number))
        out[name] = family

    walk(data, [])
    return list(out.values())

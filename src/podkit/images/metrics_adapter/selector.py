"""JSONPath-style selectors, as json_exporter users write them. Pure: no I/O, no dependencies.

    $.a.b            a member of a member            $['key with space']  a member by name
    $.a[0]  $.a[-1]  an item of a list (from the end)  $.a[0,2]  $.a[1:3]  several / a slice
    $.items[*]       every item (of a list or the values of an object); also $.items.*
    $.items[*].name  a member of every item           $..count  every `count`, at any depth
    $.items[?(@.state == "ACTIVE")]   items that pass a filter (==, !=, <, <=, >, >=, &&, ||,
                                      or just @.key: the key is there)
    {.a.b}  { .items[*] }  {[*]}      json_exporter's (Kubernetes jsonpath) form, braces and all

`$` is the document the selector is applied to (`@` means the same; inside a filter, `@` is the
item being tested).
`compile()` raises SelectorError naming the character where the text stops making sense;
`Selector.find(data)` returns every match, in document order (never raises).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_NAME = re.compile(r"[^\s.\[\]()'\"{}?=!<>,*&|@$:]+")
_INT = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


class SelectorError(ValueError):
    """A selector that cannot be parsed; str() says where and why."""


Step = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Selector:
    text: str
    steps: tuple[Step, ...]
    many: bool  # may match more than one node (wildcard, slice, union, filter, `..`)

    def find(self, data: Any) -> list[Any]:
        nodes = [data]
        for step in self.steps:
            nodes = step(nodes)
            if not nodes:
                break
        return nodes

    def __str__(self) -> str:
        return self.text


def compile(text: str) -> Selector:
    """Parse `text`; raises SelectorError (a ValueError) with the position and the reason."""
    parser = _Parser(text)
    return parser.parse()


def looks_like_selector(text: str) -> bool:
    """Whether a label or value string is meant as a selector rather than a constant."""
    s = text.lstrip()
    return s.startswith(("$", "@", "{"))


# --- steps -------------------------------------------------------------------------------------


def _member(name: str) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        return [n[name] for n in nodes if isinstance(n, dict) and name in n]

    return step


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, list):
        return list(node)
    return []


def _wildcard(nodes: list[Any]) -> list[Any]:
    return [c for n in nodes for c in _children(n)]


def _index(i: int) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        out = []
        for n in nodes:
            if isinstance(n, list) and -len(n) <= i < len(n):
                out.append(n[i])
        return out

    return step


def _union(parts: list[int | str]) -> Step:
    steps = [_index(p) if isinstance(p, int) else _member(p) for p in parts]

    def step(nodes: list[Any]) -> list[Any]:
        return [x for n in nodes for s in steps for x in s([n])]

    return step


def _slice(start: int | None, stop: int | None, stride: int | None) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        return [x for n in nodes if isinstance(n, list) for x in n[start:stop:stride]]

    return step


def _descendants(node: Any) -> Iterator[Any]:
    yield node
    for child in _children(node):
        yield from _descendants(child)


def _recursive(inner: Step) -> Step:
    """`..x`: x applied to the node and to every node below it."""

    def step(nodes: list[Any]) -> list[Any]:
        return inner([d for n in nodes for d in _descendants(n)])

    return step


Predicate = Callable[[Any], bool]  # item -> passes


def _filter(pred: Predicate) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        return [c for n in nodes for c in _children(n) if pred(c)]

    return step


# --- filter expressions -------------------------------------------------------------------------

Operand = Callable[[Any], Any]  # item -> value, or _MISSING


def _comparison(op: str, left: Operand, right: Operand) -> Predicate:
    return lambda item: _compare(op, left(item), right(item))


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is _MISSING or right is _MISSING:
        return op == "!=" and not (left is _MISSING and right is _MISSING)
    # true is not 1 here (JSON has no such equality), and numbers only compare with numbers.
    same_kind = isinstance(left, bool) == isinstance(right, bool) and (
        isinstance(left, int | float) == isinstance(right, int | float)
    )
    if op == "==":
        return same_kind and left == right
    if op == "!=":
        return not (same_kind and left == right)
    comparable = same_kind and (
        (isinstance(left, int | float) and not isinstance(left, bool))
        or (isinstance(left, str) and isinstance(right, str))
    )
    if not comparable:
        return False
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


# --- parser ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.many = False

    # helpers
    def fail(self, reason: str, at: int | None = None) -> SelectorError:
        pos = self.pos if at is None else at
        where = f"at character {pos + 1}" if pos < len(self.text) else "at the end"
        return SelectorError(f"invalid selector {self.text!r}: {where}: {reason}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, token: str) -> None:
        self.skip_ws()
        if not self.text.startswith(token, self.pos):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    # grammar
    def parse(self) -> Selector:
        self.skip_ws()
        if not self.text.strip():
            raise self.fail("empty selector: write $ for the whole document")
        braced = self.peek() == "{"
        if braced:
            self.pos += 1
            self.skip_ws()
        steps = self.path(top=True)
        self.skip_ws()
        if braced:
            if self.peek() != "}":
                raise self.fail("expected '}' to close the selector")
            self.pos += 1
            self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r}")
        return Selector(self.text, tuple(steps), self.many)

    def path(self, *, top: bool) -> list[Step]:
        """[$|@] segment*; at the top, a bare `.a` or `[0]` is relative to the document too."""
        start = self.pos
        if self.peek() in ("$", "@"):
            self.pos += 1
        elif not (top and self.peek() in (".", "[")):
            raise self.fail("a selector starts with $ (the document), @, '.', '[' or '{'", start)
        steps: list[Step] = []
        while self.pos < len(self.text):
            c = self.peek()
            if self.peek(2) == "..":
                self.pos += 2
                self.many = True
                steps.append(_recursive(self.after_recursive()))
            elif c == ".":
                self.pos += 1
                steps.append(self.dotted())
            elif c == "[":
                steps.append(self.bracket())
            else:
                break
        return steps

    def name(self) -> str | None:
        m = _NAME.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def dotted(self) -> Step:
        if self.peek() == "*":
            self.pos += 1
            self.many = True
            return _wildcard
        name = self.name()
        if name is None:
            raise self.fail("expected a name or * after '.' (use ['...'] for other keys)")
        return _member(name)

    def after_recursive(self) -> Step:
        if self.peek() == "[":
            return self.bracket()
        if self.peek() == "*":
            self.pos += 1
            return _wildcard
        name = self.name()
        if name is None:
            raise self.fail("expected a name, * or [ after '..'")
        return _member(name)

    def quoted(self) -> str:
        quote = self.peek()
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if c == quote:
                self.pos += 1
                return "".join(out)
            out.append(c)
            self.pos += 1
        raise self.fail(f"unclosed {quote} quote", start)

    def bracket(self) -> Step:
        start = self.pos
        self.pos += 1  # [
        self.skip_ws()
        if self.peek() == "*":
            self.pos += 1
            self.expect("]")
            self.many = True
            return _wildcard
        if self.peek() == "?":
            self.pos += 1
            self.skip_ws()
            paren = self.peek() == "("
            if paren:
                self.pos += 1
            pred = self.or_expr()
            if paren:
                self.expect(")")
            self.expect("]")
            self.many = True
            return _filter(pred)
        if self.peek() == "]":
            raise self.fail("empty brackets: expected an index, a 'name', * or ?(filter)")
        parts: list[int | str] = []
        slice_parts: list[int | None] | None = None
        while True:
            self.skip_ws()
            c = self.peek()
            if c in ("'", '"'):
                parts.append(self.quoted())
            elif c == ":" or _INT.match(self.text, self.pos):
                bounds = self.slice_or_index()
                if isinstance(bounds, list):
                    if parts or slice_parts is not None:
                        raise self.fail("a slice cannot be part of a list of indexes", start)
                    slice_parts = bounds
                else:
                    parts.append(bounds)
            else:
                raise self.fail("expected an index, a quoted 'name', *, a slice or ?(filter)")
            self.skip_ws()
            if self.peek() == ",":
                if slice_parts is not None:
                    raise self.fail("a slice cannot be part of a list of indexes")
                self.pos += 1
                continue
            if self.peek() != "]":
                raise self.fail("expected ']'")
            self.pos += 1
            break
        if slice_parts is not None:
            self.many = True
            start_i, stop_i, stride = (slice_parts + [None, None, None])[:3]
            if stride == 0:
                raise self.fail("a slice step cannot be 0", start)
            return _slice(start_i, stop_i, stride)
        if len(parts) == 1:
            only = parts[0]
            return _index(only) if isinstance(only, int) else _member(only)
        self.many = True
        return _union(parts)

    def int_or_none(self) -> int | None:
        self.skip_ws()
        m = _INT.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return int(m.group())

    def slice_or_index(self) -> int | list[int | None]:
        first = self.int_or_none()
        self.skip_ws()
        if self.peek() != ":":
            assert first is not None  # the caller saw a digit or ':'
            return first
        bounds: list[int | None] = [first]
        while self.peek() == ":" and len(bounds) < 3:
            self.pos += 1
            bounds.append(self.int_or_none())
            self.skip_ws()
        return bounds

    # filters: or := and ('||' and)*; and := cmp ('&&' cmp)*; cmp := operand [op operand]
    def or_expr(self) -> Predicate:
        terms = [self.and_expr()]
        while True:
            self.skip_ws()
            if self.peek(2) != "||":
                break
            self.pos += 2
            terms.append(self.and_expr())
        if len(terms) == 1:
            return terms[0]
        return lambda item: any(t(item) for t in terms)

    def and_expr(self) -> Predicate:
        terms = [self.comparison()]
        while True:
            self.skip_ws()
            if self.peek(2) != "&&":
                break
            self.pos += 2
            terms.append(self.comparison())
        if len(terms) == 1:
            return terms[0]
        return lambda item: all(t(item) for t in terms)

    def comparison(self) -> Predicate:
        self.skip_ws()
        if self.peek() == "(":
            self.pos += 1
            inner = self.or_expr()
            self.expect(")")
            return inner
        left, left_is_path = self.operand()
        self.skip_ws()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                right, _ = self.operand()
                return _comparison(op, left, right)
        if self.peek() == "=":
            raise self.fail("use == to compare")
        if not left_is_path:
            raise self.fail("expected a comparison (==, !=, <, <=, >, >=) after the value")
        return lambda item: left(item) is not _MISSING  # existence test

    def operand(self) -> tuple[Operand, bool]:
        self.skip_ws()
        c = self.peek()
        if c == "$":
            raise self.fail("inside a filter, @ is the item: write @.key")
        if c == "@":
            saved_many = self.many
            steps = self.path(top=False)
            self.many = saved_many  # a filter's own paths do not make the selector plural
            sub = Selector("", tuple(steps), False)

            def value(item: Any) -> Any:
                found = sub.find(item)
                return found[0] if found else _MISSING

            return value, True
        if c in ("'", '"'):
            text = self.quoted()
            return (lambda _item: text), False
        m = _NUMBER.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
            number = float(m.group()) if m.group(1) or m.group(2) else int(m.group())
            return (lambda _item: number), False
        for word, literal in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return (lambda _item, v=literal: v), False
        raise self.fail("expected @.path, a quoted string, a number, true, false or null")

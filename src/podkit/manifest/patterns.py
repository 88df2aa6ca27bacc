"""Field path patterns such as `spec.containers[].ports[].protocol`: `[]` stands for any index."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from podkit.manifest.document import FieldPath

ANY_INDEX = "[]"  # in a normalised path, stands for every list index


@cache
def parse_pattern(pattern: str) -> tuple[str, ...]:
    """'spec.containers[].name' -> ('spec', 'containers', '[]', 'name')."""
    out: list[str] = []
    for part in pattern.split("."):
        name, brackets = part.partition("[]")[0], part.count("[]")
        if name:
            out.append(name)
        out.extend([ANY_INDEX] * brackets)
    return tuple(out)


def normalise(path: FieldPath) -> tuple[str, ...]:
    """A concrete path with its indices replaced by `[]`, to compare with patterns."""
    return tuple(ANY_INDEX if isinstance(e, int) else e for e in path)


def find(data: Any, pattern: str) -> Iterator[tuple[FieldPath, Any]]:
    """Every (concrete path, value) in data that the pattern names."""
    yield from _find(data, parse_pattern(pattern), ())


def _find(data: Any, rest: tuple[str, ...], path: FieldPath) -> Iterator[tuple[FieldPath, Any]]:
    if not rest:
        yield path, data
        return
    head, tail = rest[0], rest[1:]
    if head == ANY_INDEX:
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from _find(item, tail, path + (i,))
    elif isinstance(data, dict) and head in data:
        yield from _find(data[head], tail, path + (head,))

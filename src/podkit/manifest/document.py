"""One Kubernetes object read from a file, with the line of every field, for messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podkit.manifest.errors import Problem
from podkit.manifest.model import Source

FieldPath = tuple[str | int, ...]

# Keys printed after a dot; anything else (label keys with dots or slashes) goes in brackets,
# like Kubernetes' field.Path does.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def format_path(path: Iterable[str | int]) -> str:
    """('spec', 'containers', 0, 'image') -> 'spec.containers[0].image'."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif _PLAIN_KEY.match(elem):
            out += f".{elem}" if out else elem
        else:
            out += f"[{elem}]"
    return out


@dataclass(frozen=True)
class Manifest:
    """A Kubernetes object (a whole YAML document, or one item of a `kind: List`)."""

    source: Source
    data: dict[str, Any]
    lines: dict[FieldPath, int] = field(repr=False)  # absolute path in the document -> line
    prefix: FieldPath = ()  # where the object sits in its document: () or ('items', i)

    @property
    def kind(self) -> str:
        kind = self.data.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def namespace(self) -> str:
        meta = self.data.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) and ns else "default"

    def line(self, path: FieldPath) -> int | None:
        """Line of the field, or of its nearest ancestor present in the file."""
        full = self.prefix + tuple(path)
        for end in range(len(full), -1, -1):
            line = self.lines.get(full[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: FieldPath, reason: str) -> Problem:
        return Problem(
            file=self.source.file,
            doc=self.source.doc,
            path=format_path(self.prefix + tuple(path)),
            line=self.line(path),
            reason=reason,
        )

    def where(self, path: FieldPath) -> str:
        """'spec.containers[0].name, line 9': to point at a second place in a message."""
        line = self.line(path)
        text = format_path(self.prefix + tuple(path))
        return f"{text}, line {line}" if line is not None else text

    def item(self, index: int) -> Manifest:
        """The index-th object of a `kind: List`."""
        return Manifest(
            self.source, self.data["items"][index], self.lines, self.prefix + ("items", index)
        )

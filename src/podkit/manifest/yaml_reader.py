"""Multi-document YAML -> Manifests that remember the line of every field.

The C parser composes each document's node tree; we index key and item lines from the nodes,
then construct plain Python data from the same nodes, so the YAML is parsed only once.
"""

from __future__ import annotations

from typing import Any

import yaml

from podkit.manifest.document import FieldPath, Manifest, format_path
from podkit.manifest.errors import Problem
from podkit.manifest.model import Source

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that keeps timestamps as the text written, as kubectl does."""


def _plain_str(loader: yaml.BaseLoader, node: yaml.Node) -> str:
    return str(node.value)


# creationTimestamp: 2024-01-01T00:00:00Z must stay a string (the schema says string), and a
# bare `=` is YAML 1.1's "value" tag, which SafeLoader cannot construct.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _plain_str)
_Loader.add_constructor("tag:yaml.org,2002:value", _plain_str)


_MAX_VALUES = 100_000  # with aliases expanded: a guard against "billion laughs" documents


class _Unusable(Exception):
    """The document cannot be used at all (aliases that loop or explode)."""

    def __init__(self, path: FieldPath, reason: str) -> None:
        self.path, self.reason = path, reason


def parse_documents(file: str, text: str) -> tuple[list[Manifest], list[Problem]]:
    """Every non-empty document of a YAML stream, plus the problems found on the way."""
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    loader = _Loader(text.removeprefix("\ufeff"))
    number = 0
    try:
        while True:
            number += 1
            if not loader.check_node():
                break
            node = loader.get_node()
            manifest = _document(loader, node, Source(file, number), problems)
            if manifest is not None:
                manifests.append(manifest)
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(file, number, exc))
    except yaml.YAMLError as exc:
        problems.append(Problem(file, number, "", None, f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    return manifests, problems


def _document(
    loader: Any, node: yaml.Node, source: Source, problems: list[Problem]
) -> Manifest | None:
    indexer = _Indexer(source, node)
    try:
        indexer.index(node, ())
    except _Unusable as exc:
        problems.append(Manifest(source, {}, indexer.lines).problem(exc.path, exc.reason))
        return None
    problems += indexer.problems
    data = _string_keys(loader.construct_document(node))
    if data is None:
        return None  # an empty document, e.g. a trailing `---`
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"the value {data!r}"
        reason = f"a document must be a Kubernetes object (a mapping), not {what}"
        problems.append(Problem(source.file, source.doc, "", indexer.lines[()], reason))
        return None
    return Manifest(source, data, indexer.lines)


class _Indexer:
    """Records the line of every key and item; reports duplicate keys, as kubectl does."""

    def __init__(self, source: Source, root: yaml.Node) -> None:
        self.source = source
        self.lines: dict[FieldPath, int] = {(): root.start_mark.line + 1}
        self.problems: list[Problem] = []
        self._active: set[int] = set()  # nodes being walked: meeting one again is a loop
        self._count = 0

    def index(self, node: yaml.Node, path: FieldPath) -> None:
        self._count += 1
        if self._count > _MAX_VALUES:
            raise _Unusable((), f"more than {_MAX_VALUES} values once YAML aliases are expanded")
        if id(node) in self._active:
            raise _Unusable(path, "a YAML alias refers to itself")
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self._active.add(id(node))
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path)
            else:
                for i, item in enumerate(node.value):
                    self.lines[path + (i,)] = item.start_mark.line + 1
                    self.index(item, path + (i,))
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> None:
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            # Keys merged in with `<<:` have no line of their own: they report their parent's.
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in seen:
                reason = f'duplicate key "{key}" (first on line {seen[key]})'
                where = format_path(path + (key,))
                self.problems.append(
                    Problem(self.source.file, self.source.doc, where, line, reason)
                )
            seen[key] = line
            self.lines[path + (key,)] = line
            self.index(value_node, path + (key,))


def _string_keys(data: Any) -> Any:
    """Mapping keys become strings, as sigs.k8s.io/yaml does (`80: x` -> "80", `on:` -> "true")."""
    if isinstance(data, dict):
        return {_key_text(k): _string_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_string_keys(v) for v in data]
    return data


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _syntax_problem(file: str, doc: int, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    what = ", ".join(part for part in (exc.context, exc.problem) if part)
    return Problem(file, doc, "", line, f"invalid YAML: {what or exc}")

"""Load Kubernetes manifests from files into a checked Bundle, or fail with every problem at once.

    bundle = load_files(["pod.yaml", "config.yaml"])

Steps: read each file (a directory means its .yaml/.yml/.json files, `-` means stdin), split it
into documents keeping the line of every field, validate each object against the official
Kubernetes schema, run podkit's own checks (references, names, ports), and build the model. Any
problem anywhere raises one ManifestError listing them all; there is never a partial Bundle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from podkit.manifest.build import build_key_values, build_pod
from podkit.manifest.checks import Known, metadata_problems, pod_problems
from podkit.manifest.document import Manifest
from podkit.manifest.errors import ManifestError, Problem
from podkit.manifest.model import Bundle
from podkit.manifest.schema import check_schema, has_schema, schema_key
from podkit.manifest.support import unsupported_warning
from podkit.manifest.yaml_reader import parse_documents

SUPPORTED_KINDS = ("Pod", "ConfigMap", "Secret", "Service")
_SUFFIXES = (".yaml", ".yml", ".json")


def load_files(paths: Sequence[str | Path]) -> Bundle:
    """Every Pod, ConfigMap, Secret and Service in the files; ManifestError if anything is
    wrong."""
    problems: list[Problem] = []
    manifests = _manifests(paths, problems)
    checked = _validate(manifests, problems)
    bundle, known = _key_values(checked, problems)
    _pods(checked, known, bundle, problems)
    if problems:
        order = {name: i for i, name in enumerate(dict.fromkeys(p.file for p in problems))}
        problems.sort(key=lambda p: (order[p.file], p.doc, p.line or 0))
        raise ManifestError(problems)
    return bundle


# --- reading -------------------------------------------------------------------------------


def _manifests(
    paths: Sequence[str | Path], problems: list[Problem], any_kind: bool = False
) -> list[Manifest]:
    """Every object of the files, in order (of podkit run's kinds, unless `any_kind`)."""
    manifests: list[Manifest] = []
    for name, text in _read_all(paths, problems):
        found, bad = parse_documents(name, text)
        problems += bad
        for manifest in found:
            manifests += _objects(manifest, problems, any_kind)
    return manifests


def _read_all(paths: Sequence[str | Path], problems: list[Problem]) -> Iterator[tuple[str, str]]:
    """(name for messages, text) of every file named, in order."""
    for given in paths:
        if str(given) == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        for path in _expand(Path(given), problems):
            text = _read_text(path, problems)
            if text is not None:
                yield str(path), text


def _expand(path: Path, problems: list[Problem]) -> list[Path]:
    """A directory stands for its manifest files, like `kubectl apply -f dir/`."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
    if not files:
        problems.append(Problem(str(path), 0, "", None, "directory has no .yaml, .yml or .json"))
    return files


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        problems.append(Problem(str(path), 0, "", None, f"cannot read: {exc.strerror or exc}"))
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 text (invalid byte at offset {exc.start})"
        problems.append(Problem(str(path), 0, "", None, reason))
    return None


# --- objects -------------------------------------------------------------------------------


def read_objects(paths: Sequence[str | Path]) -> list[Manifest]:
    """Every object in the files, of any kind with an official schema (`podkit export`), each
    checked against it; ManifestError listing every problem."""
    problems: list[Problem] = []
    manifests = _manifests(paths, problems, any_kind=True)
    for m in manifests:
        key = schema_key(str(m.data.get("apiVersion", "")), m.kind)
        if not has_schema(key):
            reason = f"no official schema for {m.data.get('apiVersion')} {m.kind}"
            problems.append(m.problem(("kind",), reason))
        else:
            problems += check_schema(m, key).problems
    if problems:
        raise ManifestError(problems)
    return manifests


def _objects(m: Manifest, problems: list[Problem], any_kind: bool = False) -> list[Manifest]:
    """The objects a document holds: itself, or the items of a `kind: List`."""
    if m.data.get("kind") != "List":
        reason = _identity_problem(m, any_kind)
        if reason is not None:
            problems.append(reason)
            return []
        return [m]
    items = m.data.get("items")
    if not isinstance(items, list):
        problems.append(m.problem(("items",), "a List needs items: a list of objects"))
        return []
    out: list[Manifest] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            out += _objects(m.item(index), problems, any_kind)
        else:
            problems.append(m.problem(("items", index), "must be a Kubernetes object (a mapping)"))
    return out


def _identity_problem(m: Manifest, any_kind: bool = False) -> Problem | None:
    kind, supported = m.data.get("kind"), ", ".join(SUPPORTED_KINDS)
    if kind is None:
        hint = "" if any_kind else f"; supported kinds: {supported}"
        return m.problem(("kind",), f"required field is missing{hint}")
    if kind not in SUPPORTED_KINDS and not any_kind:
        reason = f"kind {kind} is not supported by podkit run; supported: {supported}"
        return m.problem(("kind",), reason)
    return None


@dataclass(frozen=True)
class _Checked:
    """An object after schema validation: rejected values removed, so later checks can run."""

    manifest: Manifest
    rejected: tuple[str, ...]  # field paths already reported; later checks stay quiet there
    valid: bool

    def keep(self, problems: list[Problem]) -> list[Problem]:
        """Problems not already explained by a schema error at the same field or above it."""
        return [p for p in problems if not any(_within(p.path, r) for r in self.rejected)]


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))


def _validate(manifests: list[Manifest], problems: list[Problem]) -> list[_Checked]:
    checked: list[_Checked] = []
    for m in manifests:
        result = check_schema(m)
        found = list(result.problems)
        if not m.data.get("apiVersion"):
            reason = f"required field is missing (a {m.kind} is apiVersion: v1)"
            found.append(m.problem(("apiVersion",), reason))
        problems += found
        rejected = tuple(p.path for p in found)
        checked.append(_Checked(result.pruned(m), rejected, not found))
    return checked


def _key_values(checked: list[_Checked], problems: list[Problem]) -> tuple[Bundle, Known]:
    bundle = Bundle()
    broken: set[tuple[str, str, str]] = set()
    seen: Seen = {}
    for item in checked:
        m = item.manifest
        if m.kind == "Pod":
            continue
        if m.kind == "Service":
            found = item.keep(list(metadata_problems(m)))
            problems += found
            if not _duplicate(m, seen, problems) and not found and item.valid:
                bundle.services[(m.namespace, m.name)] = m.data
            continue
        kv, bad = build_key_values(m)
        found = item.keep([*metadata_problems(m), *bad])
        problems += found
        if _duplicate(m, seen, problems) or found or not item.valid:
            broken.add((m.kind, m.namespace, m.name))
            continue
        table = bundle.config_maps if m.kind == "ConfigMap" else bundle.secrets
        table[(kv.namespace, kv.name)] = kv
    return bundle, Known(bundle.config_maps, bundle.secrets, frozenset(broken))


Seen = dict[tuple[str, str, str], Manifest]


def _duplicate(m: Manifest, seen: Seen, problems: list[Problem]) -> bool:
    """Two objects of one kind with one namespace/name: the second is an error, as in a cluster."""
    if not m.name:
        return False
    first = seen.setdefault((m.kind, m.namespace, m.name), m)
    if first is m:
        return False
    name_path = ("metadata", "name")
    where = first.where(name_path) if first.source == m.source else str(first.source)
    reason = f'{m.kind} "{m.namespace}/{m.name}" is defined twice (first in {where})'
    problems.append(m.problem(name_path, reason))
    return True


def _pods(checked: list[_Checked], known: Known, bundle: Bundle, problems: list[Problem]) -> None:
    node_name = os.uname().nodename
    seen: Seen = {}
    for item in checked:
        m = item.manifest
        if m.kind != "Pod":
            continue
        found = item.keep(pod_problems(m, known))
        problems += found
        if _duplicate(m, seen, problems) or found or not item.valid:
            continue
        bundle.pods.append(build_pod(m, node_name))
        warning = unsupported_warning(m)
        if warning:
            bundle.warnings.append(warning)

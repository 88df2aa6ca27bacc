"""podkit's own checks of schema-valid objects: what the API server or the kubelet would reject
later (names, references, ports, quantities), found before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from podkit.manifest.document import FieldPath, Manifest
from podkit.manifest.errors import Problem
from podkit.manifest.lifecycle_checks import grace_problems, lifecycle_problems
from podkit.manifest.model import KeyValueObject
from podkit.manifest.patterns import find
from podkit.manifest.quantity import parse_quantity
from podkit.manifest.security_checks import security_problems
from podkit.manifest.validation import (
    ENV_FIELD_PATHS,
    ENV_NAME_ERROR,
    LABEL_ERROR,
    MODE_ERROR,
    SUBDOMAIN_ERROR,
    VOLUME_FIELD_PATHS,
    field_path_error,
    is_dns_label,
    is_dns_subdomain,
    is_env_var_name,
    relative_path_error,
    resource_field_error,
)

_PULL = ("Always", "IfNotPresent", "Never")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_ENUMS: dict[str, tuple[str, ...]] = {
    "spec.restartPolicy": ("Always", "OnFailure", "Never"),
    "spec.initContainers[].restartPolicy": ("Always",),
    "spec.containers[].imagePullPolicy": _PULL,
    "spec.initContainers[].imagePullPolicy": _PULL,
    "spec.containers[].ports[].protocol": _PROTOCOLS,
    "spec.initContainers[].ports[].protocol": _PROTOCOLS,
    "spec.containers[].terminationMessagePolicy": _MESSAGE_POLICIES,
    "spec.initContainers[].terminationMessagePolicy": _MESSAGE_POLICIES,
    **{
        f"spec.{kind}[].securityContext.procMount": ("Default", "Unmasked")
        for kind in ("containers", "initContainers")
    },
    "spec.securityContext.fsGroupChangePolicy": ("OnRootMismatch", "Always"),
    "spec.volumes[].hostPath.type": (
        "",
        "DirectoryOrCreate",
        "Directory",
        "FileOrCreate",
        "File",
        "Socket",
        "CharDevice",
        "BlockDevice",
    ),
}


@dataclass(frozen=True)
class Known:
    """The ConfigMaps and Secrets loaded, to check a pod's references against."""

    config_maps: Mapping[tuple[str, str], KeyValueObject]
    secrets: Mapping[tuple[str, str], KeyValueObject]
    broken: frozenset[tuple[str, str, str]] = frozenset()  # (kind, ns, name) given but invalid

    def get(self, kind: str, namespace: str, name: str) -> KeyValueObject | None:
        table = self.config_maps if kind == "ConfigMap" else self.secrets
        return table.get((namespace, name))

    def names(self, kind: str, namespace: str) -> list[str]:
        table = self.config_maps if kind == "ConfigMap" else self.secrets
        return [name for ns, name in table if ns == namespace]

    def namespaces(self, kind: str, name: str) -> list[str]:
        table = self.config_maps if kind == "ConfigMap" else self.secrets
        return sorted(ns for ns, other in table if other == name)


def metadata_problems(m: Manifest) -> Iterator[Problem]:
    """Every kind needs a valid name: podkit does not generate one."""
    meta = m.data.get("metadata") or {}
    name = meta.get("name")
    if not name:
        hint = " (metadata.generateName is not supported)" if meta.get("generateName") else ""
        yield m.problem(("metadata", "name"), f"required field is missing{hint}")
    elif not is_dns_subdomain(name):
        yield m.problem(("metadata", "name"), SUBDOMAIN_ERROR)
    namespace = meta.get("namespace")
    if namespace and not is_dns_label(namespace):
        yield m.problem(("metadata", "namespace"), LABEL_ERROR)


def pod_problems(m: Manifest, known: Known) -> list[Problem]:
    """Everything wrong with a schema-valid Pod, in line order."""
    spec = m.data.get("spec") or {}
    problems = [*metadata_problems(m), *_container_list(m, spec), *_volumes(m, spec, known)]
    for path, container in _containers(spec):
        problems += _image(m, path, container)
        problems += _mounts(m, spec, path, container)
        problems += _env(m, spec, path, container, known)
        problems += _env_from(m, path, container, known)
        problems += _resources(m, path, container)
        problems += lifecycle_problems(m, spec, path, container)
    problems += grace_problems(m, spec)
    problems += security_problems(m, spec, list(_containers(spec)))
    problems += _port_claims(m, spec)
    problems += _enums(m)
    return sorted(problems, key=lambda p: p.line or 0)


def _dicts(items: list[Any] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, item) of a list field, skipping null items (`- ` alone), which mean nothing."""
    for index, item in enumerate(items or []):
        if isinstance(item, dict):
            yield index, item


def _containers(spec: dict[str, Any]) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    for field in ("containers", "initContainers"):
        for index, container in _dicts(spec.get(field)):
            yield ("spec", field, index), container


def _guess(word: str, choices: Iterable[str]) -> str:
    import difflib  # only needed when something is wrong: not paid on every start

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{found[0]}"?)' if found else ""


def _container_list(m: Manifest, spec: dict[str, Any]) -> Iterator[Problem]:
    if not spec.get("containers"):
        yield m.problem(("spec", "containers"), "a pod needs at least one container")
    seen: dict[str, FieldPath] = {}
    for path, container in _containers(spec):
        yield from _unique_label(m, path + ("name",), container.get("name", ""), seen, "container")


def _unique_label(
    m: Manifest, path: FieldPath, name: str, seen: dict[str, FieldPath], what: str
) -> Iterator[Problem]:
    if not is_dns_label(name):
        yield m.problem(path, LABEL_ERROR)
    if name in seen:
        yield m.problem(path, f'duplicate {what} name "{name}" (also {m.where(seen[name])})')
    else:
        seen[name] = path


def _image(m: Manifest, path: FieldPath, container: dict[str, Any]) -> Iterator[Problem]:
    if not container.get("image"):
        yield m.problem(path + ("image",), "required field is missing")


# --- volumes -------------------------------------------------------------------------------


def _volumes(m: Manifest, spec: dict[str, Any], known: Known) -> Iterator[Problem]:
    seen: dict[str, FieldPath] = {}
    for index, volume in _dicts(spec.get("volumes")):
        path: FieldPath = ("spec", "volumes", index)
        yield from _unique_label(m, path + ("name",), volume.get("name", ""), seen, "volume")
        sources = [key for key, value in volume.items() if key != "name" and value is not None]
        if len(sources) > 1:
            found = ", ".join(sources)
            yield m.problem(path, f"may not specify more than 1 volume type (found {found})")
        for source in sources:
            yield from _volume_source(m, spec, path + (source,), volume[source] or {}, known)


def _volume_source(
    m: Manifest, spec: dict[str, Any], path: FieldPath, source: dict[str, Any], known: Known
) -> Iterator[Problem]:
    kind = path[-1]
    yield from _modes(m, path, source)
    if kind == "configMap":
        yield from _key_to_path(m, path, source, known, "ConfigMap", "name")
    elif kind == "secret":
        yield from _key_to_path(m, path, source, known, "Secret", "secretName")
    elif kind == "downwardAPI":
        for index, item in _dicts(source.get("items")):
            yield from _downward_item(m, spec, path + ("items", index), item)
    elif kind == "projected":
        for index, projection in _dicts(source.get("sources")):
            yield from _projection(m, spec, path + ("sources", index), projection, known)


def _projection(
    m: Manifest, spec: dict[str, Any], path: FieldPath, projection: dict[str, Any], known: Known
) -> Iterator[Problem]:
    """One source of a projected volume; its objects are named by `name`, secrets too."""
    for kind in ("configMap", "secret", "downwardAPI"):
        source = projection.get(kind)
        if source is None:
            continue
        if kind == "downwardAPI":
            for index, item in _dicts(source.get("items")):
                yield from _downward_item(m, spec, path + (kind, "items", index), item)
            continue
        yield from _modes(m, path + (kind,), source)
        target = "ConfigMap" if kind == "configMap" else "Secret"
        yield from _key_to_path(m, path + (kind,), source, known, target, "name")


def _modes(m: Manifest, path: FieldPath, source: dict[str, Any]) -> Iterator[Problem]:
    modes = [(path + ("defaultMode",), source.get("defaultMode"))]
    for index, item in _dicts(source.get("items")):
        modes.append((path + ("items", index, "mode"), item.get("mode")))
    for mode_path, mode in modes:
        if mode is not None and not 0 <= mode <= 0o777:
            yield m.problem(mode_path, MODE_ERROR)


def _key_to_path(
    m: Manifest, path: FieldPath, source: dict[str, Any], known: Known, kind: str, name_field: str
) -> Iterator[Problem]:
    """configMap/secret volumes: safe item paths, and the object and keys must exist."""
    keys: list[tuple[FieldPath, str]] = []
    for index, item in _dicts(source.get("items")):
        item_path = path + ("items", index)
        error = relative_path_error(item.get("path", ""))
        if error:
            yield m.problem(item_path + ("path",), error)
        keys.append((item_path + ("key",), item.get("key", "")))
    name = source.get(name_field)
    optional = bool(source.get("optional"))
    yield from _reference(m, known, kind, name, path + (name_field,), optional, keys)


def _downward_item(
    m: Manifest, spec: dict[str, Any], path: FieldPath, item: dict[str, Any]
) -> Iterator[Problem]:
    error = relative_path_error(item.get("path", ""))
    if error:
        yield m.problem(path + ("path",), error)
    field_ref, resource_ref = item.get("fieldRef"), item.get("resourceFieldRef")
    if field_ref and resource_ref:
        yield m.problem(path, "fieldRef and resourceFieldRef can not be specified simultaneously")
    elif not field_ref and not resource_ref:
        yield m.problem(path, "one of fieldRef and resourceFieldRef is required")
    if field_ref:
        yield from _field_ref(m, path + ("fieldRef",), field_ref, VOLUME_FIELD_PATHS)
    if resource_ref:
        yield from _resource_ref(m, spec, path + ("resourceFieldRef",), resource_ref, True)


def _field_ref(
    m: Manifest, path: FieldPath, ref: dict[str, Any], allowed: tuple[str, ...]
) -> Iterator[Problem]:
    if ref.get("apiVersion") not in (None, "", "v1"):
        yield m.problem(path + ("apiVersion",), f'unsupported pod version "{ref["apiVersion"]}"')
    error = field_path_error(ref.get("fieldPath", ""), allowed)
    if error:
        yield m.problem(path + ("fieldPath",), error)


def _resource_ref(
    m: Manifest, spec: dict[str, Any], path: FieldPath, ref: dict[str, Any], in_volume: bool
) -> Iterator[Problem]:
    container = ref.get("containerName")
    names = [n for _, c in _containers(spec) if isinstance(n := c.get("name"), str)]
    if not container and in_volume:
        yield m.problem(path + ("containerName",), "required field is missing")
    elif container and container not in names:
        reason = f'container "{container}" not found in this pod{_guess(container, names)}'
        yield m.problem(path + ("containerName",), reason)
    error = resource_field_error(ref.get("resource", ""), ref.get("divisor"))
    if error:
        yield m.problem(path + ("resource",), error)


# --- references to ConfigMaps and Secrets --------------------------------------------------


def _reference(
    m: Manifest,
    known: Known,
    kind: str,
    name: str | None,
    name_path: FieldPath,
    optional: bool,
    keys: Iterable[tuple[FieldPath, str]] = (),
    env_value: bool = False,
) -> Iterator[Problem]:
    """The object must be among the loaded files, with the keys asked for, unless optional."""
    namespace = m.namespace
    if not name:
        yield m.problem(name_path, "required field is missing")
        return
    if (kind, namespace, name) in known.broken:
        return  # already reported where it is defined
    found = known.get(kind, namespace, name)
    if found is None:
        if not optional:
            elsewhere = known.namespaces(kind, name)
            guess = (
                f' (there is one in namespace "{elsewhere[0]}")'
                if elsewhere
                else _guess(name, known.names(kind, namespace))
            )
            reason = (
                f'{kind} "{name}" not found in namespace "{namespace}"{guess}: it is not in the '
                "loaded files (add its file, or set optional: true)"
            )
            yield m.problem(name_path, reason)
        return
    if optional:
        return  # a missing key of an optional reference is skipped, by the kubelet too
    for key_path, key in keys:
        if env_value and key in found.binary_keys:
            reason = f'key "{key}" of {kind} "{name}" is in binaryData, which env cannot use'
            yield m.problem(key_path, reason)
        elif key not in found.data:
            have = ", ".join(sorted(found.data)) or "no keys"
            reason = f'key "{key}" not found in {kind} "{namespace}/{name}" (it has: {have})'
            yield m.problem(key_path, reason)


# --- containers ----------------------------------------------------------------------------


def _mounts(
    m: Manifest, spec: dict[str, Any], path: FieldPath, container: dict[str, Any]
) -> Iterator[Problem]:
    declared = [volume.get("name", "") for _, volume in _dicts(spec.get("volumes"))]
    mounted_at: dict[str, FieldPath] = {}
    for index, mount in _dicts(container.get("volumeMounts")):
        mount_path = path + ("volumeMounts", index)
        name = mount.get("name", "")
        if name not in declared:
            reason = f'volume "{name}" is not declared in spec.volumes{_guess(name, declared)}'
            yield m.problem(mount_path + ("name",), reason)
        target = mount.get("mountPath", "")
        if not target:
            yield m.problem(mount_path + ("mountPath",), "must not be empty")
        elif target in mounted_at:
            reason = f"must be unique: {target} is also mounted by {m.where(mounted_at[target])}"
            yield m.problem(mount_path + ("mountPath",), reason)
        else:
            mounted_at[target] = mount_path + ("mountPath",)
        if mount.get("subPath"):
            error = relative_path_error(mount["subPath"])
            if error:
                yield m.problem(mount_path + ("subPath",), error)


def _env(
    m: Manifest, spec: dict[str, Any], path: FieldPath, container: dict[str, Any], known: Known
) -> Iterator[Problem]:
    for index, var in _dicts(container.get("env")):
        var_path = path + ("env", index)
        if not is_env_var_name(var.get("name", "")):
            yield m.problem(var_path + ("name",), ENV_NAME_ERROR)
        source = var.get("valueFrom")
        if source is None:
            continue
        if var.get("value"):
            yield m.problem(var_path + ("valueFrom",), "may not be specified when `value` is set")
        kinds = [key for key, value in source.items() if value is not None]
        if len(kinds) != 1:
            reason = "must specify exactly one of: fieldRef, resourceFieldRef, configMapKeyRef, "
            yield m.problem(var_path + ("valueFrom",), reason + "secretKeyRef")
            continue
        kind = kinds[0]
        yield from _value_from(m, spec, var_path + ("valueFrom", kind), kind, source[kind], known)


def _value_from(
    m: Manifest, spec: dict[str, Any], path: FieldPath, kind: str, ref: dict[str, Any], known: Known
) -> Iterator[Problem]:
    if kind == "fieldRef":
        yield from _field_ref(m, path, ref, ENV_FIELD_PATHS)
    elif kind == "resourceFieldRef":
        yield from _resource_ref(m, spec, path, ref, False)
    elif kind in ("configMapKeyRef", "secretKeyRef"):
        target = "ConfigMap" if kind == "configMapKeyRef" else "Secret"
        keys = [(path + ("key",), ref.get("key", ""))]
        optional = bool(ref.get("optional"))
        name, name_path = ref.get("name"), path + ("name",)
        yield from _reference(m, known, target, name, name_path, optional, keys, env_value=True)


def _env_from(
    m: Manifest, path: FieldPath, container: dict[str, Any], known: Known
) -> Iterator[Problem]:
    for index, source in _dicts(container.get("envFrom")):
        source_path = path + ("envFrom", index)
        prefix = source.get("prefix")
        if prefix and not is_env_var_name(prefix):
            yield m.problem(source_path + ("prefix",), ENV_NAME_ERROR)
        refs = [key for key in ("configMapRef", "secretRef") if source.get(key) is not None]
        if len(refs) != 1:
            yield m.problem(source_path, "must specify exactly one of: configMapRef, secretRef")
        for key in refs:
            kind = "ConfigMap" if key == "configMapRef" else "Secret"
            ref, name_path = source[key], source_path + (key, "name")
            optional = bool(ref.get("optional"))
            yield from _reference(m, known, kind, ref.get("name"), name_path, optional)


def _resources(m: Manifest, path: FieldPath, container: dict[str, Any]) -> Iterator[Problem]:
    resources = container.get("resources") or {}
    parsed = {}
    for section in ("limits", "requests"):
        for name, amount in (resources.get(section) or {}).items():
            try:
                parsed[section, name] = parse_quantity(amount)
            except ValueError as exc:
                reason = f"{amount!r} is not a valid quantity: {exc}"
                yield m.problem(path + ("resources", section, name), reason)
    for (section, name), amount in parsed.items():
        limit = parsed.get(("limits", name))
        if section == "requests" and limit is not None and amount > limit:
            reason = f"must be less than or equal to {name} limit of {resources['limits'][name]}"
            yield m.problem(path + ("resources", section, name), reason)


# --- pod-wide ------------------------------------------------------------------------------

Claims = dict[tuple[Any, ...], tuple[str, FieldPath]]


def _port_claims(m: Manifest, spec: dict[str, Any]) -> Iterator[Problem]:
    """Containers running side by side share one network namespace: a port is taken once."""
    ports: Claims = {}
    host_ports: Claims = {}
    for path, container in _containers(spec):
        # plain init containers run alone; native sidecars (restartPolicy Always) run alongside
        side_by_side = path[1] == "containers" or container.get("restartPolicy") == "Always"
        for index, port in _dicts(container.get("ports")):
            port_path = path + ("ports", index)
            number, host = port.get("containerPort", 0), port.get("hostPort")
            if not 1 <= number <= 65535:
                yield m.problem(port_path + ("containerPort",), "must be between 1 and 65535")
            if host and not 1 <= host <= 65535:
                yield m.problem(port_path + ("hostPort",), "must be between 1 and 65535")
            if not side_by_side:
                continue
            owner = container.get("name", "")
            protocol = port.get("protocol") or "TCP"
            key: tuple[Any, ...] = (number, protocol)
            what = f"port {number}/{protocol}"
            yield from _claim(m, ports, key, owner, port_path + ("containerPort",), what)
            if host:
                key = (host, protocol, port.get("hostIP") or "")
                what = f"host port {host}/{protocol}"
                yield from _claim(m, host_ports, key, owner, port_path + ("hostPort",), what)


def _claim(
    m: Manifest, claims: Claims, key: tuple[Any, ...], owner: str, path: FieldPath, what: str
) -> Iterator[Problem]:
    if key not in claims:
        claims[key] = (owner, path)
        return
    first_owner, first_path = claims[key]
    if first_owner != owner:  # one container listing a port twice is harmless
        reason = f'{what} is already claimed by container "{first_owner}" ({m.where(first_path)})'
        yield m.problem(path, reason)


def _enums(m: Manifest) -> Iterator[Problem]:
    """Fields the schema types as plain strings but Kubernetes limits to a few values."""
    for pattern, allowed in _ENUMS.items():
        for path, value in find(m.data, pattern):
            if value is not None and value not in allowed:
                values = ", ".join(f'"{v}"' for v in allowed)
                yield m.problem(path, f'unsupported value "{value}"; supported values: {values}')

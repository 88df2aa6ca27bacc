"""A container's environment, built as the kubelet builds it (pkg/kubelet/kubelet_pods.go).

Pure: no I/O, except reading the node's capacity (CPU count, /proc/meminfo) once, and only for
a resourceFieldRef on a container without that limit.

    env = resolve_env(pod, container, bundle, {"status.podIP": "10.0.0.5"})
    command, args = expand_command(container, env)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction
from functools import cache
from typing import Any

from podkit.manifest.model import Bundle, Container, KeyValueObject, Pod
from podkit.manifest.quantity import milli_value, parse_quantity, value
from podkit.manifest.validation import is_env_var_name, subscripted_field

DEFAULT_IP = "127.0.0.1"


class ResolveError(Exception):
    """A reference that cannot be resolved: the kubelet's CreateContainerConfigError."""


def resolve_env(
    pod: Pod,
    container: Container,
    bundle: Bundle,
    extra: dict[str, str] | None = None,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The container's declared environment (envFrom, then env), with Kubernetes' semantics,
    over `base` (the Services' variables: $(VAR) sees them, the declared ones win).

    extra carries what only the runtime knows: "status.podIP", "status.hostIP" (default
    127.0.0.1) and optionally "status.podIPs", "status.hostIPs" (comma separated).
    """
    status = {"status.podIP": DEFAULT_IP, "status.hostIP": DEFAULT_IP, **(extra or {})}
    env: dict[str, str] = dict(base or {})
    for source in container.env_from:
        env.update(_from_source(pod, source, bundle))
    for var in container.env:
        resolved = _var_value(pod, container, var, env, bundle, status)
        if resolved is not None:
            env[var["name"]] = resolved
    return env


def _var_value(
    pod: Pod,
    container: Container,
    var: dict[str, Any],
    env: Mapping[str, str],
    bundle: Bundle,
    status: Mapping[str, str],
) -> str | None:
    """One env entry's value; None when an optional reference is missing (the var is unset)."""
    if var.get("value"):
        return expand(var["value"], env)  # $(VAR) sees envFrom and the entries before this one
    source = var.get("valueFrom")
    if not source:
        return ""
    if source.get("fieldRef"):
        return field_value(pod, source["fieldRef"]["fieldPath"], status)
    if source.get("resourceFieldRef"):
        return resource_value(pod, container, source["resourceFieldRef"])
    if source.get("configMapKeyRef"):
        return _key_value(pod, bundle, "ConfigMap", source["configMapKeyRef"])
    if source.get("secretKeyRef"):
        return _key_value(pod, bundle, "Secret", source["secretKeyRef"])
    raise ResolveError(f"env {var['name']}: unsupported valueFrom {sorted(source)}")


# --- ConfigMaps and Secrets ----------------------------------------------------------------


def lookup(
    bundle: Bundle, kind: str, namespace: str, name: str, optional: bool
) -> KeyValueObject | None:
    """The ConfigMap or Secret, None if it is missing but optional; ResolveError otherwise."""
    table = bundle.config_maps if kind == "ConfigMap" else bundle.secrets
    found = table.get((namespace, name))
    if found is None and not optional:
        raise ResolveError(f'{kind.lower()} "{name}" not found')
    return found


def _from_source(pod: Pod, source: dict[str, Any], bundle: Bundle) -> dict[str, str]:
    if source.get("configMapRef"):
        kind, ref = "ConfigMap", source["configMapRef"]
    elif source.get("secretRef"):
        kind, ref = "Secret", source["secretRef"]
    else:
        return {}
    found = lookup(bundle, kind, pod.namespace, ref.get("name", ""), bool(ref.get("optional")))
    if found is None:
        return {}
    prefix = source.get("prefix") or ""
    out: dict[str, str] = {}
    for key in sorted(found.data.keys() - found.binary_keys):  # the kubelet reads `data` only
        name = prefix + key
        # Names no process environment can hold are skipped, as the kubelet did with an event.
        if is_env_var_name(name):
            out[name] = _text(found.data[key])
    return out


def _key_value(pod: Pod, bundle: Bundle, kind: str, ref: dict[str, Any]) -> str | None:
    optional = bool(ref.get("optional"))
    found = lookup(bundle, kind, pod.namespace, ref.get("name", ""), optional)
    if found is None:
        return None
    key = ref["key"]
    if key not in found.data or key in found.binary_keys:
        if optional:
            return None
        raise ResolveError(f"couldn't find key {key} in {kind} {pod.namespace}/{found.name}")
    return _text(found.data[key])


def _text(data: bytes) -> str:
    # surrogateescape: bytes that are not UTF-8 reach the process unchanged via os.fsencode
    return data.decode("utf-8", "surrogateescape")


# --- downward API ----------------------------------------------------------------------------


def field_value(pod: Pod, field_path: str, status: Mapping[str, str] | None = None) -> str:
    """A fieldRef's value, as the kubelet's podFieldSelectorRuntimeValue and fieldpath package."""
    status = {"status.podIP": DEFAULT_IP, "status.hostIP": DEFAULT_IP, **(status or {})}
    subscripted = subscripted_field(field_path)
    if subscripted is not None:
        table = pod.labels if subscripted[0] == "metadata.labels" else pod.annotations
        return table.get(subscripted[1], "")
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account_name,
        "status.podIP": status["status.podIP"],
        "status.hostIP": status["status.hostIP"],
        "status.podIPs": status.get("status.podIPs", status["status.podIP"]),
        "status.hostIPs": status.get("status.hostIPs", status["status.hostIP"]),
    }
    if field_path in simple:
        return simple[field_path]
    if field_path == "metadata.labels":
        return format_map(pod.labels)
    if field_path == "metadata.annotations":
        return format_map(pod.annotations)
    raise ResolveError(f"unsupported fieldPath: {field_path}")


def format_map(mapping: Mapping[str, str]) -> str:
    """`key="value"` lines in key order, values quoted like Go's %q (fieldpath.FormatMap)."""
    return "\n".join(f"{key}={go_quote(mapping[key])}" for key in sorted(mapping))


_GO_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """strconv.Quote: printable characters kept, the rest escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def resource_value(pod: Pod, container: Container, selector: dict[str, Any]) -> str:
    """A resourceFieldRef's value: the amount divided by the divisor, rounded up."""
    name = selector.get("containerName")
    target = _find_container(pod, name) if name else container
    resource = selector["resource"]
    divisor = parse_quantity(selector.get("divisor") or 0)
    if divisor == 0:
        divisor = Fraction(1)  # an unset (zero) divisor means 1
    section, _, kind = resource.partition(".")
    amount = _amount(target, section, kind)
    if kind == "cpu":
        return str(math.ceil(Fraction(milli_value(amount), milli_value(divisor))))
    return str(math.ceil(Fraction(value(amount), value(divisor))))


def _find_container(pod: Pod, name: str) -> Container:
    for container in pod.containers + pod.init_containers:
        if container.name == name:
            return container
    raise ResolveError(f"container {name} not found")


def _amount(container: Container, section: str, kind: str) -> Fraction:
    """The container's limit or request, with the defaults a cluster applies.

    The API server defaults a missing request to the limit; the kubelet reports a missing
    (or zero) limit as the node's allocatable amount.
    """
    if kind not in ("cpu", "memory", "ephemeral-storage") or section not in ("limits", "requests"):
        raise ResolveError(f"unsupported container resource: {section}.{kind}")
    limits = container.resources.get("limits") or {}
    requests = container.resources.get("requests") or {}
    if section == "requests":
        given = requests.get(kind, limits.get(kind))
        return parse_quantity(given) if given is not None else Fraction(0)
    limit = parse_quantity(limits[kind]) if kind in limits else Fraction(0)
    return limit if limit else node_allocatable()[kind]


@cache
def node_allocatable() -> dict[str, Fraction]:
    """This machine's capacity, which stands in for a node's allocatable resources."""
    disk = os.statvfs("/")
    return {
        "cpu": Fraction(os.cpu_count() or 1),
        "memory": Fraction(_mem_total()),
        "ephemeral-storage": Fraction(disk.f_blocks * disk.f_frsize),
    }


def _mem_total() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the file counts in KiB
    raise ResolveError("MemTotal missing from /proc/meminfo")


# --- $(VAR) expansion -------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion (third_party/forked/golang/expansion).

    $(NAME) becomes the value of NAME, or stays as written when NAME is undefined; $$ becomes $,
    so $$(NAME) is the literal $(NAME). Anything else, like $NAME or ${NAME}, is left alone.
    """
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_name, advance = _read_name(text, cursor + 1)
            if is_name:
                out.append(env.get(read, f"$({read})"))
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_name(text: str, start: int) -> tuple[str, bool, int]:
    """(text read, whether it is a variable name, characters consumed) after a `$`."""
    char = text[start]
    if char == "$":
        return "$", False, 1  # escaped operator
    if char == "(":
        close = text.find(")", start + 1)
        if close != -1:
            return text[start + 1 : close], True, close - start + 1
        return "$(", False, 1  # unterminated: kept as written
    return "$" + char, False, 1


def expand_command(container: Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The container's command and args with $(VAR) expanded from its environment."""
    command = [expand(arg, env) for arg in container.command]
    args = [expand(arg, env) for arg in container.args]
    return command, args

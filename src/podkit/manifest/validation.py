"""Kubernetes' rules for names, keys, paths and downward API selectors, with its messages."""

from __future__ import annotations

import re
from fractions import Fraction

from podkit.manifest.quantity import parse_quantity

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")
_SUBSCRIPTED = re.compile(r"(metadata\.labels|metadata\.annotations)\['(.+)'\]\Z")

LABEL_ERROR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (at most 63 characters)"
)
SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (at most 253 characters)"
)
ENV_NAME_ERROR = (
    "a valid environment variable name must consist only of printable ASCII characters other "
    "than '='"
)
MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"

# The downward API fields each consumer may read (pkg/apis/core/validation).
ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
VOLUME_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "metadata.uid",
)
RESOURCE_FIELDS = (
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
)
_CPU_DIVISORS = {Fraction(1, 1000), Fraction(1)}
_BYTE_DIVISORS = {Fraction(10) ** e for e in (0, 3, 6, 9, 12, 15, 18)} | {
    Fraction(2) ** e for e in (10, 20, 30, 40, 50, 60)
}


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and _LABEL.match(name) is not None


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and _SUBDOMAIN.match(name) is not None


def is_env_var_name(name: str) -> bool:
    """Kubernetes' relaxed rule (GA since 1.34): printable ASCII, no '='."""
    return bool(name) and all(" " <= ch <= "~" and ch != "=" for ch in name)


def config_key_error(key: str) -> str | None:
    """Why a ConfigMap or Secret key is invalid (keys become file names), or None."""
    if len(key) > 253 or _CONFIG_KEY.match(key) is None:
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    if key in (".", ".."):
        return f"must not be '{key}'"
    if key.startswith(".."):
        return "must not start with '..'"
    return None


def subscripted_field(field_path: str) -> tuple[str, str] | None:
    """metadata.labels['app'] -> ('metadata.labels', 'app'); None when not subscripted."""
    match = _SUBSCRIPTED.match(field_path)
    return (match[1], match[2]) if match else None


def field_path_error(field_path: str, allowed: tuple[str, ...]) -> str | None:
    """Why a fieldRef.fieldPath cannot be used here, or None when it can."""
    if field_path in allowed or subscripted_field(field_path):
        return None
    values = ", ".join(f'"{p}"' for p in allowed)
    return f'unsupported value "{field_path}"; supported values: {values}'


def relative_path_error(path: str) -> str | None:
    """Why a file path under a volume is unsafe (empty, absolute or climbing out), or None."""
    if not path:
        return "must not be empty"
    if path.startswith("/"):
        return "must be a relative path"
    if ".." in path.split("/"):
        return "must not contain '..'"
    return None


def resource_field_error(resource: str, divisor: object) -> str | None:
    """Why a resourceFieldRef cannot be resolved, or None."""
    if resource not in RESOURCE_FIELDS:
        values = ", ".join(f'"{r}"' for r in RESOURCE_FIELDS)
        return f'unsupported value "{resource}"; supported values: {values}'
    if divisor is None:
        return None
    try:
        amount = parse_quantity(divisor)  # type: ignore[arg-type]
    except ValueError as exc:
        return f"divisor: {exc}"
    if resource.endswith(".cpu") and amount not in _CPU_DIVISORS:
        return "only divisor's values 1m and 1 are supported with the cpu resource"
    if not resource.endswith(".cpu") and amount not in _BYTE_DIVISORS:
        return (
            "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei "
            f"are supported with the {resource.split('.', 1)[1]} resource"
        )
    return None

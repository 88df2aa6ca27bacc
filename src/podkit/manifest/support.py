"""Which valid Kubernetes Pod fields podkit implements; everything else is named in a warning.

To support a new field, add its pattern here: `[]` stands for any list index, and a pattern covers
everything below it (`metadata.labels` covers every label).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from podkit.manifest.document import FieldPath, Manifest, format_path
from podkit.manifest.patterns import normalise, parse_pattern

_CONTAINER_FIELDS = (
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "stdin",
    "stdinOnce",
    "tty",
    "workingDir",
    "env[].name",
    "env[].value",
    "env[].valueFrom.fieldRef",
    "env[].valueFrom.resourceFieldRef",
    "env[].valueFrom.configMapKeyRef",
    "env[].valueFrom.secretKeyRef",
    "envFrom[].configMapRef",
    "envFrom[].secretRef",
    "envFrom[].prefix",
    "ports[].containerPort",
    "ports[].hostPort",
    "ports[].hostIP",
    "ports[].name",
    "ports[].protocol",
    "volumeMounts[].name",
    "volumeMounts[].mountPath",
    "volumeMounts[].readOnly",
    "volumeMounts[].subPath",
    "resources.limits",
    "resources.requests",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "lifecycle.postStart",
    "lifecycle.preStop",
    "terminationMessagePath",  # accepted silently: defaults every manifest generator writes
    "terminationMessagePolicy",
    "securityContext.capabilities",
    "securityContext.privileged",
    "securityContext.allowPrivilegeEscalation",
    "securityContext.readOnlyRootFilesystem",
    "securityContext.runAsUser",
    "securityContext.runAsGroup",
    "securityContext.runAsNonRoot",
    "securityContext.seccompProfile",
)

_KINDS = ("containers", "initContainers")
_NO_DEFAULT = object()
_KEY_TO_PATH = ("items[].key", "items[].path", "items[].mode")
_DOWNWARD_ITEMS = ("items[].path", "items[].fieldRef", "items[].resourceFieldRef", "items[].mode")
_OBJECTS = ("configMap", "secret")
_PROJECTED = ("name", "optional", *_KEY_TO_PATH)

SUPPORTED_POD_FIELDS: tuple[str, ...] = (
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "metadata.uid",
    # Written by the API server (kubectl get -o yaml); meaningless as input, so accepted silently.
    "metadata.creationTimestamp",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.selfLink",
    "metadata.managedFields",
    *(f"spec.{kind}[].{f}" for kind in _KINDS for f in _CONTAINER_FIELDS),
    "spec.initContainers[].restartPolicy",
    "spec.volumes[].name",
    "spec.volumes[].emptyDir.medium",
    "spec.volumes[].emptyDir.sizeLimit",
    "spec.volumes[].hostPath.path",
    "spec.volumes[].hostPath.type",
    "spec.volumes[].configMap.name",
    "spec.volumes[].configMap.defaultMode",
    "spec.volumes[].configMap.optional",
    *(f"spec.volumes[].configMap.{f}" for f in _KEY_TO_PATH),
    "spec.volumes[].secret.secretName",
    "spec.volumes[].secret.defaultMode",
    "spec.volumes[].secret.optional",
    *(f"spec.volumes[].secret.{f}" for f in _KEY_TO_PATH),
    "spec.volumes[].downwardAPI.defaultMode",
    *(f"spec.volumes[].downwardAPI.{f}" for f in _DOWNWARD_ITEMS),
    "spec.volumes[].projected.defaultMode",
    *(f"spec.volumes[].projected.sources[].{kind}.{f}" for kind in _OBJECTS for f in _PROJECTED),
    *(f"spec.volumes[].projected.sources[].downwardAPI.{f}" for f in _DOWNWARD_ITEMS),
    "spec.restartPolicy",
    "spec.securityContext.runAsUser",
    "spec.securityContext.runAsGroup",
    "spec.securityContext.runAsNonRoot",
    "spec.securityContext.supplementalGroups",
    "spec.securityContext.fsGroup",
    "spec.securityContext.fsGroupChangePolicy",  # volumes are new each run: both policies agree
    "spec.securityContext.sysctls",
    "spec.securityContext.seccompProfile",
    "spec.shareProcessNamespace",
    "spec.terminationGracePeriodSeconds",
    "spec.hostname",
    "spec.subdomain",  # with podkit serve's DNS: <hostname>.<subdomain>.<ns>.svc
    "spec.enableServiceLinks",
    "spec.hostAliases",
    "spec.dnsPolicy",
    "spec.dnsConfig",
    "spec.imagePullSecrets",
    "spec.nodeName",
    "spec.serviceAccountName",
    "spec.serviceAccount",  # the deprecated alias of serviceAccountName
    "status",  # output only
)


# Unsupported fields set to their Kubernetes default ask for nothing podkit does not already
# do; generators (`kubectl run --dry-run -o yaml`, `kubectl get -o yaml`) write them everywhere.
DEFAULT_VALUES: dict[str, Any] = {
    "spec.dnsPolicy": "ClusterFirst",
    "spec.schedulerName": "default-scheduler",
    "spec.priority": 0,
    "spec.preemptionPolicy": "PreemptLowerPriority",
    "spec.hostNetwork": False,
    "spec.hostPID": False,
    "spec.hostIPC": False,
    # procMount Unmasked (no masked or read-only /proc paths) is not implemented.
    **{f"spec.{kind}[].securityContext.procMount": "Default" for kind in _KINDS},
}


@cache
def _defaults() -> dict[tuple[str, ...], Any]:
    return {parse_pattern(p): value for p, value in DEFAULT_VALUES.items()}


@cache
def _tables() -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]]]:
    """The supported patterns, and every proper prefix of one (fields to look inside)."""
    supported = frozenset(parse_pattern(p) for p in SUPPORTED_POD_FIELDS)
    inner = frozenset(p[:i] for p in supported for i in range(len(p)))
    return supported, inner


def unsupported_fields(data: dict[str, Any]) -> list[FieldPath]:
    """Paths of the set fields podkit ignores, outermost only, in natural order."""
    supported, inner = _tables()
    found: list[FieldPath] = []
    _walk(data, (), supported, inner, found)
    return sorted(found, key=lambda path: [(isinstance(e, int), e) for e in path])


def _walk(
    value: Any,
    path: FieldPath,
    supported: frozenset[tuple[str, ...]],
    inner: frozenset[tuple[str, ...]],
    found: list[FieldPath],
) -> None:
    if value is None or value == {} or value == []:
        return  # null or empty asks for nothing, so nothing is ignored
    shape = normalise(path)
    if shape in supported or _is_default(shape, value):
        return
    if shape not in inner:
        found.append(path)
    elif isinstance(value, dict):
        for key, child in value.items():
            _walk(child, path + (key,), supported, inner, found)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _walk(child, path + (index,), supported, inner, found)


def _is_default(shape: tuple[str, ...], value: Any) -> bool:
    default = _defaults().get(shape, _NO_DEFAULT)
    return default == value and isinstance(default, bool) == isinstance(value, bool)


def unsupported_warning(pod: Manifest) -> str | None:
    """One warning naming every ignored field of the pod, or None when there is none."""
    paths = unsupported_fields(pod.data)
    if not paths:
        return None
    name = pod.name if pod.namespace == "default" else f"{pod.namespace}/{pod.name}"
    fields = ", ".join(format_path(pod.prefix + p) for p in paths)
    return (
        f"pod {name}: these fields are valid Kubernetes but not implemented by podkit "
        f"and are ignored: {fields}"
    )

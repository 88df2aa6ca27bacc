"""Service accounts in pods, as the apiserver's ServiceAccount admission gives them, pure: a
pod that does not say `automountServiceAccountToken: false` (nor does its ServiceAccount)
gets the projected volume `kube-api-access-<random>` (a bound token, the cluster's CA from
the `kube-root-ca.crt` ConfigMap, its namespace) mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container; and the rule by which
a ServiceAccount's token may act (read in its own namespace; write there only when serve
allows it, until RBAC exists).
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA = "kube-root-ca.crt"
READS = ("get", "list", "watch")


def admitted(pod: Obj, account: Obj | None, suffix: str) -> Obj:
    """The pod with its service account token volume (a new pod's, before it is stored)."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    if spec.get("automountServiceAccountToken") is False:
        return pod
    if (
        spec.get("automountServiceAccountToken") is None
        and (account or {}).get("automountServiceAccountToken") is False
    ):
        return pod
    name = f"kube-api-access-{suffix}"
    spec.setdefault("volumes", []).append({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })  # fmt: skip
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            mounts = c.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == MOUNT for m in mounts):
                mounts.append({"name": name, "mountPath": MOUNT, "readOnly": True})
    return pod


def forbidden(verb: str, namespace: str, own: str, writes: bool) -> bool:
    """Whether a ServiceAccount of namespace `own` may not do `verb` in `namespace`."""
    if namespace != own:
        return True
    return verb not in READS and not writes


def forbidden_message(user: str, verb: str, resource: str, group: str, namespace: str) -> str:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (
        f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API '
        f'group "{group}"{where}'
    )

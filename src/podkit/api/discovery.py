"""Discovery documents, pure: what kubectl reads to learn the served resources.

Both forms are served, as the apiserver serves them: the aggregated one
(apidiscovery.k8s.io/v2 APIGroupDiscoveryList, two requests for everything) when the Accept
header asks for it, and the legacy one (APIVersions, APIGroupList, APIResourceList) otherwise.
kubectl reads the form from the response's Content-Type. Every resource names its
responseKind in the aggregated form: kubectl drops one without it.
"""

from __future__ import annotations

from typing import Any

from podkit.api.kinds import KINDS, POD, Kind

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# (resource, subresource, kind, verbs)
SUBRESOURCES: tuple[tuple[Kind, str, str, list[str]], ...] = (
    (POD, "log", "Pod", ["get"]),
    (POD, "exec", "PodExecOptions", ["create", "get"]),
    (POD, "attach", "PodAttachOptions", ["create", "get"]),
    (POD, "portforward", "PodPortForwardOptions", ["create", "get"]),
)


def wants_aggregated(accept: str) -> bool:
    return "g=apidiscovery.k8s.io" in accept and "v=v2" in accept


def legacy_core() -> dict[str, Any]:
    """/api/v1: an APIResourceList."""
    items: list[dict[str, Any]] = []
    for k in _core():
        items.append(
            {
                "name": k.resource,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
                **({"shortNames": list(k.short_names)} if k.short_names else {}),
                **({"categories": list(k.categories)} if k.categories else {}),
            }
        )
        items += [
            {"name": f"{k.resource}/{sub}", "singularName": "", "namespaced": k.namespaced,
             "kind": kind, "verbs": verbs}
            for owner, sub, kind, verbs in SUBRESOURCES if owner is k
        ]  # fmt: skip
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": items}


def aggregated_core() -> dict[str, Any]:
    """/api in the aggregated form: the core group's v1 with every resource."""
    resources = []
    for k in _core():
        resources.append(
            {
                "resource": k.resource,
                "responseKind": {"group": "", "version": "v1", "kind": k.kind},
                "scope": "Namespaced" if k.namespaced else "Cluster",
                "singularResource": k.singular,
                "verbs": VERBS,
                **({"shortNames": list(k.short_names)} if k.short_names else {}),
                **({"categories": list(k.categories)} if k.categories else {}),
                "subresources": [
                    {"subresource": sub,
                     "responseKind": {"group": "", "version": "v1", "kind": kind},
                     "verbs": verbs}
                    for owner, sub, kind, verbs in SUBRESOURCES if owner is k
                ],
            }
        )  # fmt: skip
    version = {"version": "v1", "freshness": "Current", "resources": resources}
    return _list([{"metadata": {}, "versions": [version]}])


def aggregated_groups() -> dict[str, Any]:
    """/apis in the aggregated form: no named groups are served yet."""
    return _list([])


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _core() -> list[Kind]:
    return [k for k in KINDS if not k.group]

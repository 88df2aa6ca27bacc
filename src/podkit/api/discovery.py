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


def group_versions() -> list[tuple[str, str]]:
    """The served (group, version)s in discovery's order: core first, as kubectl prefers."""
    return list(dict.fromkeys((k.group, k.version) for k in KINDS))


def _kinds(group: str, version: str) -> list[Kind]:
    return [k for k in KINDS if (k.group, k.version) == (group, version)]


def _subresources(k: Kind) -> list[tuple[str, dict[str, str], list[str]]]:
    """(subresource, its response's group/version/kind, verbs) of a kind, as discovery names
    them."""
    own = {"group": k.group, "version": k.version}
    subs = [
        (sub, {**own, "kind": kind}, verbs)
        for owner, sub, kind, verbs in SUBRESOURCES
        if owner is k
    ]
    if k.status:
        subs.append(("status", {**own, "kind": k.kind}, ["get", "patch", "update"]))
    if k.scale:
        scale = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        subs.append(("scale", scale, ["get", "patch", "update"]))
    return subs


def legacy_resources(group: str, version: str) -> dict[str, Any]:
    """/api/v1 or /apis/<group>/<version>: an APIResourceList."""
    items: list[dict[str, Any]] = []
    for k in _kinds(group, version):
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
             "kind": gvk["kind"], "verbs": verbs,
             **({"group": gvk["group"], "version": gvk["version"]}
                if gvk["group"] != k.group else {})}
            for sub, gvk, verbs in _subresources(k)
        ]  # fmt: skip
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": items,
    }


def legacy_group(group: str) -> dict[str, Any] | None:
    """/apis/<group>: an APIGroup, or None for a group not served."""
    versions = [
        {"groupVersion": f"{g}/{v}", "version": v} for g, v in group_versions() if g == group
    ]
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
            "preferredVersion": versions[0]}  # fmt: skip


def legacy_groups() -> dict[str, Any]:
    """/apis: an APIGroupList of the named groups."""
    names = dict.fromkeys(g for g, _ in group_versions() if g)
    groups = [{k: v for k, v in (legacy_group(g) or {}).items() if k not in ("kind", "apiVersion")}
              for g in names]  # fmt: skip
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _aggregated_group(group: str) -> dict[str, Any]:
    versions = []
    for g, v in group_versions():
        if g != group:
            continue
        resources = [
            {
                "resource": k.resource,
                "responseKind": {"group": g, "version": v, "kind": k.kind},
                "scope": "Namespaced" if k.namespaced else "Cluster",
                "singularResource": k.singular,
                "verbs": VERBS,
                **({"shortNames": list(k.short_names)} if k.short_names else {}),
                **({"categories": list(k.categories)} if k.categories else {}),
                "subresources": [
                    {"subresource": sub, "responseKind": gvk, "verbs": verbs}
                    for sub, gvk, verbs in _subresources(k)
                ],
            }
            for k in _kinds(g, v)
        ]  # fmt: skip
        versions.append({"version": v, "freshness": "Current", "resources": resources})
    return {"metadata": {"name": group} if group else {}, "versions": versions}


def aggregated_core() -> dict[str, Any]:
    """/api in the aggregated form: the core group's v1 with every resource."""
    return _list([_aggregated_group("")])


def aggregated_groups() -> dict[str, Any]:
    """/apis in the aggregated form: every named group."""
    names = dict.fromkeys(g for g, _ in group_versions() if g)
    return _list([_aggregated_group(g) for g in names])


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
